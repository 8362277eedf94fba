"""Jobs, workers and completion contexts: the Python face of bgjob.

Ownership of Python objects handed to C
---------------------------------------
C never sees a Python object. Every userdata pointer bgjob gets is a small
integer key into ``_keep``; the object stays there until bgjob calls the free
function ``_free``, which is the one place it is dropped. The ctypes callback
objects (``_worker_cb``, ``_complete_cb``, ...) are module globals that live as
long as the process, so no trampoline can be collected while C may call it.

A started job's ``Job`` object is itself held in ``_keep`` (through the
``_JobRef`` that is its completion userdata), so it cannot be collected before
its completion has run or been dropped: ``Job.__del__`` meets only ended jobs
and never-started ones, and the at-exit hook finds every live job there.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import concurrent.futures
import contextvars
import ctypes
import dataclasses
import errno
import inspect
import itertools
import logging
import math
import operator
import os
import signal
import sys
import threading
import time
import traceback
import weakref
from ctypes import byref, c_bool, c_int32, c_size_t, c_uint32, c_uint64, c_void_p, sizeof
from typing import Any, Callable, Generator, Generic, Iterable, Iterator, Mapping, NamedTuple, TypeVar, Union, cast

from . import _ffi
from ._enums import CancelCause, CancelStatus, Control, ErrorAction, ErrorPolicy, EventKind, IoStatus, JobType
from ._enums import Result, StatType, State, Verb
from ._errors import BgjobError, CallbackErrors, Cancelled, DeadlineExceeded, InvalidArgument, InvalidHandle
from ._errors import JobError, JobFailed, NotAllowed
from ._errors import TimedOut, check, error_for
from ._ffi import ContextPtr, JobPtr, TxnPtr, lib

#: The error code a job gets when its Python worker raised anything but an
#: ``OSError`` with an errno (whose errno is used instead).
EXCEPTION_CODE = -1

_logger = logging.getLogger("bgjob")

#: A job's result type: what its worker returns.
T = TypeVar("T")

_U64_MAX = (1 << 64) - 1
_I64_MAX = (1 << 63) - 1
# A wait on the main thread is cut into slices this long, so that a signal
# (Ctrl-C) is handled between them: CPython runs signal handlers only in Python
# code, and bgjob's wait is a condition variable that a signal does not end.
_SLICE_MS = 50

# ---------------------------------------------------------------- userdata

_keep: dict[int, tuple[Any, bool]] = {}
_keys = itertools.count(1)
# The keys of userdata whose free function may run on a bgjob thread (workers,
# completions, hooks, finalizers, child output, the log callback). Each such
# thread's last Python code is that free, so once this set is empty no bgjob
# thread is in Python or will enter it: the at-exit hook waits for that before
# the interpreter goes (a thread taking the GIL during finalization is ended
# with pthread_exit, which cannot unwind through bgjob's Rust frames). A
# table, not a counter: adding or deleting a key is one step that a thread
# switch cannot split, where `n += 1` is a read and a write with room between
# them for another thread's update to be lost (and the exit to wait forever).
# A dict (key -> None) rather than a set: its deletion is an opcode, not a
# method call, after which CPython never hands the GIL over (see `_free`).
_tracked: dict[int, None] = {}
_shutting_down = False
_tls = threading.local()
#: Seconds the at-exit hook waits for workers after cancelling them (None:
#: as long as they run); see ``set_exit_timeout``.
_exit_timeout: float | None = None


def _hold(obj: Any, tracked: bool) -> int:
    """Keeps ``obj`` alive until bgjob frees the returned key."""
    key = next(_keys)
    if tracked:
        _tracked[key] = None
    _keep[key] = (obj, tracked)
    return key


def _after_fork_in_child() -> None:
    """In a forked child none of the parent's bgjob threads exist and every
    parent handle is invalid: nothing the parent handed bgjob will be freed
    here, so nothing of it is waited for at exit. The child may make jobs of
    its own."""
    global _loop_contexts_lock, _ended_cond
    _tracked.clear()
    _loop_contexts_lock = threading.Lock()
    _ended_cond = threading.Condition(threading.Lock())
    _loop_contexts.clear()
    for ctx in list(_contexts):
        ctx._forget()


def _report(exc: BaseException) -> None:
    """Reports an exception raised by user code that no caller can catch (a
    completion or hook running on a bgjob thread), the way threading does."""
    try:
        threading.excepthook(threading.ExceptHookArgs((type(exc), exc, exc.__traceback__, None)))
    except BaseException:
        pass


def _user_error(exc: BaseException) -> None:
    """An exception from a completion callback: raised again by the
    ``Context.dispatch`` running it, else reported."""
    errors = getattr(_tls, "errors", None)
    if errors is not None:
        errors.append(exc)
    else:
        _report(exc)


def _free(key: int) -> None:
    obj: Any = None
    job: Any = None
    try:
        obj, _ = _keep.pop(key)
        job = obj.get() if isinstance(obj, _JobRef) else None
        if job is not None:
            # The completion was dropped unrun (its context was closed first):
            # the job has ended all the same; wake whoever waits on it. (A free
            # function must not call bgjob for its job: the state is read
            # later, by whoever wants it.)
            job._ended(None, run_callback=False)
        # Their last references go here, not as the frame ends: that may run
        # Python code (a __del__), which must come before the key goes.
        obj = job = None
    except BaseException:
        # Only reachable while the interpreter is being torn down.
        pass
    # The last statement, and no call: CPython may hand the GIL to another
    # thread right after a call returns (its eval-breaker check), and an
    # exiting main thread that found the table empty then would finalize
    # while this thread still has to take the GIL back to return into C (it
    # would be ended there, inside bgjob's frames). After a deletion and a
    # return, the thread gives the GIL up only in ctypes' release.
    if key in _tracked:
        del _tracked[key]


_free_cb = _ffi.bgjob_free_callback(_free)


# ---------------------------------------------------------------- helpers


def _stat_spec(name: str, type: StatType, unit: str = "") -> tuple[str, bytes, StatType, bytes]:
    """A statistic's declaration, checked and converted: (name, its C
    string, its type, its unit's C string)."""
    return name, _cstr(name, "add_stat"), StatType(type), _cstr(unit, "add_stat unit")


def _u64(value: int, what: str) -> int:
    try:
        value = operator.index(value)  # an int: 2.5 or "100" is no count
    except TypeError:
        raise TypeError(f"{what}: expected an int, not {type(value).__name__}") from None
    if not 0 <= value <= _U64_MAX:
        raise InvalidArgument(f"{what}: {value} is not in 0..2**64-1")
    return value


_I32_MIN, _I32_MAX = -(1 << 31), (1 << 31) - 1
_U32_MAX = (1 << 32) - 1


def _cint(value: Any, what: str, lo: int = _I32_MIN, hi: int = _I32_MAX) -> int:
    """``value`` as an int that fits the C parameter (an int32_t unless
    ``lo``/``hi`` say otherwise). ctypes would cut a larger number to its low
    bits without a word -- ``end(2**32)`` would complete the job -- so a
    number out of range is an ``InvalidArgument`` before C is called."""
    try:
        v = operator.index(value)  # an int (or IntEnum): 0.5 or "0" is no code
    except TypeError:
        raise TypeError(f"{what}: expected an int, not {type(value).__name__}") from None
    if not lo <= v <= hi:
        raise InvalidArgument(f"{what}: {value!r} is not in {lo}..{hi}")
    return v


def _errno_of(exc: BaseException) -> int:
    """The code a job gets for ``exc``: an ``OSError``'s errno when it is a
    non-zero int that fits C's int32_t, else ``EXCEPTION_CODE`` (an errno cut
    to its low bits could read as 0, success)."""
    code = exc.errno if isinstance(exc, OSError) else None
    if isinstance(code, int) and code != 0 and _I32_MIN <= code <= _I32_MAX:
        return code
    return EXCEPTION_CODE


def _cstr(text: str, what: str, errors: str = "strict") -> bytes:
    """``text`` as a C string. A ``str`` only; one holding a NUL character is
    an ``InvalidArgument`` (C would end the text there, silently)."""
    if not isinstance(text, str):
        raise TypeError(f"{what}: expected a str, not {type(text).__name__}")
    b = text.encode("utf-8", errors)
    if b"\0" in b:
        raise InvalidArgument(f"{what}: {text!r} holds a NUL character (C would cut the text there)")
    return b


def _cpath(text: str | bytes | os.PathLike[Any], what: str) -> bytes:
    """A path or argument for the OS (``os.fsencode``), refused with a NUL."""
    b = os.fsencode(text)
    if b"\0" in b:
        raise InvalidArgument(f"{what}: {text!r} holds a NUL character (C would cut it there)")
    return b


def _ms(seconds: float | None, what: str) -> int:
    """Seconds to whole milliseconds (rounded up, capped); None is -1."""
    if seconds is None:
        return -1
    if seconds != seconds or seconds < 0:
        raise InvalidArgument(f"{what}: {seconds!r} is not a number of seconds >= 0")
    if seconds == math.inf:
        return _I64_MAX
    return min(math.ceil(seconds * 1000), _I64_MAX)


def _text(getter: Callable[..., int], handle: Any, what: str, *lead: Any) -> str:
    """Reads a snprintf-style string (name, phase, error) of any length."""
    size = 128
    while True:
        buf = ctypes.create_string_buffer(size)
        full = c_size_t()
        check(getter(handle, *lead, buf, size, byref(full)), what)
        if full.value < size:
            return buf.value.decode("utf-8", "replace")
        size = full.value + 1


def _seconds(ms: int) -> float | None:
    return None if ms < 0 else ms / 1000.0


#: A statistic's value as Python reads it.
StatValue = Union[int, float, str]

_STAT_SETTERS = {
    StatType.U64: ("bgjob_job_set_stat_u64", "u64"),
    StatType.I64: ("bgjob_job_set_stat_i64", "i64"),
    StatType.DOUBLE: ("bgjob_job_set_stat_double", "f64"),
}


def _stat_index(decls: Mapping[str, tuple[int, StatType]], key: str | int, what: str) -> tuple[int, StatType]:
    """The index and type of a declared statistic, by name or index."""
    if isinstance(key, str):
        if key not in decls:
            raise InvalidArgument(f"{what}: no statistic named {key!r}")
        return decls[key]
    for index, t in decls.values():
        if index == key:
            return index, t
    raise InvalidArgument(f"{what}: no statistic with index {key!r}")


def _set_stat(h: Any, decls: Mapping[str, tuple[int, StatType]], key: str | int, value: StatValue) -> int:
    index, t = _stat_index(decls, key, "set_stat")
    if t == StatType.STRING:
        if not isinstance(value, str):
            raise InvalidArgument(f"set_stat: statistic {key!r} is a string, not {type(value).__name__}")
        return int(lib.bgjob_job_set_stat_string(h, index, _cstr(value, "set_stat")))
    fn, _ = _STAT_SETTERS[t]
    if t == StatType.DOUBLE:
        v: Any = float(value)
    else:
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidArgument(f"set_stat: statistic {key!r} takes an int, not {type(value).__name__}")
        lo, hi = (0, _U64_MAX) if t == StatType.U64 else (-(2**63), 2**63 - 1)
        if not lo <= value <= hi:
            raise InvalidArgument(f"set_stat: {value} does not fit statistic {key!r} ({t})")
        v = value
    return int(getattr(lib, fn)(h, index, v))


def _set_stats(h: Any, decls: Mapping[str, tuple[int, StatType]], values: Mapping[str | int, StatValue]) -> int:
    """One batch: a reader sees all of ``values`` or none."""
    updates = (_ffi.bgjob_stat_update * max(1, len(values)))()
    keep = []
    for u, (key, value) in zip(updates, values.items()):
        index, t = _stat_index(decls, key, "set_stats")
        u.index = index
        if t == StatType.STRING:
            if not isinstance(value, str):
                raise InvalidArgument(f"set_stats: statistic {key!r} is a string")
            b = _cstr(value, "set_stats")
            keep.append(b)
            u.text = b
        elif t == StatType.DOUBLE:
            u.value.f64 = float(value)
        else:
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidArgument(f"set_stats: statistic {key!r} takes an int")
            lo, hi = (0, _U64_MAX) if t == StatType.U64 else (-(2**63), 2**63 - 1)
            if not lo <= value <= hi:
                raise InvalidArgument(f"set_stats: {value} does not fit statistic {key!r} ({t})")
            if t == StatType.U64:
                u.value.u64 = value
            else:
                u.value.i64 = value
    return int(lib.bgjob_job_set_stats(h, updates, len(values)))


@dataclasses.dataclass(frozen=True)
class Stat:
    """One statistic as read (``Job.stat_list()``)."""

    name: str
    type: StatType
    unit: str
    value: StatValue


def _read_stats(h: Any, what: str, with_info: bool) -> tuple[_ffi.bgjob_info | None, list[Stat]]:
    """Every statistic (and the snapshot, read with them) in one C call."""
    capacity = 16
    while True:
        out = (_ffi.bgjob_stat * capacity)()
        count = c_size_t()
        info = _ffi.bgjob_info(struct_size=sizeof(_ffi.bgjob_info)) if with_info else None
        r = lib.bgjob_job_get_stats(h, byref(info) if info is not None else None, out, capacity, byref(count))
        check(r, what)
        if count.value <= capacity:
            stats = []
            for c in out[: count.value]:
                t = StatType(c.type)
                v: StatValue
                if t == StatType.STRING:
                    v = c.text.decode("utf-8", "replace")
                elif t == StatType.DOUBLE:
                    v = c.value.f64
                elif t == StatType.I64:
                    v = c.value.i64
                else:
                    v = c.value.u64
                stats.append(Stat(c.name.decode("utf-8", "replace"), t, c.unit.decode("utf-8", "replace"), v))
            return info, stats
        capacity = count.value


# ---------------------------------------------------------------- snapshots


@dataclasses.dataclass(frozen=True)
class Info:
    """One consistent snapshot of a job (``bgjob_job_get_info``). Times are in
    seconds; ``None`` means unknown."""

    id: int
    state: State
    job_type: JobType
    cancel_requested: bool
    pause_requested: bool
    #: Active time since start (paused time excluded).
    elapsed: float
    #: Estimated time to completion; 0 once finished.
    remaining: float | None
    #: 0-100; None when unknown and always for unbounded jobs.
    percent: int | None
    error_code: int
    current: int
    #: Units in all; None when unknown.
    total: int | None
    #: Units per second of active time.
    rate: float | None
    #: Time since the last progress update; None before the first.
    since_progress: float | None
    #: Why cancel was requested (NONE if it was not).
    cancel_cause: CancelCause
    #: Internal pauses in force (``Job.pause_internal``).
    pause_count: int
    #: Not OK only while paused by the error policy.
    iostatus: IoStatus
    error_policy: ErrorPolicy
    #: Whether complete was requested (``Job.complete``).
    complete_requested: bool = False
    #: Whether the cancel request is a soft one (``Job.cancel(soft=True)``).
    cancel_soft: bool = False
    #: The phase name ("copying", "cleaning up"), read right after the rest
    #: (bgjob's snapshot struct has no room for text).
    phase: str = ""

    @classmethod
    def _from_c(cls, c: _ffi.bgjob_info, phase: str = "") -> Info:
        return cls(
            phase=phase,
            id=c.id,
            state=State(c.state),
            job_type=JobType(c.job_type),
            cancel_requested=c.cancel_requested,
            pause_requested=c.pause_requested,
            elapsed=c.elapsed_ms / 1000.0,
            remaining=_seconds(c.remaining_ms),
            percent=None if c.percent < 0 else c.percent,
            error_code=c.error_code,
            current=c.current,
            total=c.total or None,
            rate=None if c.rate < 0 else c.rate,
            since_progress=_seconds(c.since_progress_ms),
            cancel_cause=CancelCause(c.cancel_cause),
            pause_count=c.pause_count,
            iostatus=IoStatus(c.iostatus),
            error_policy=ErrorPolicy(c.error_policy),
            complete_requested=c.complete_requested,
            cancel_soft=c.cancel_soft,
        )


@dataclasses.dataclass(frozen=True)
class ErrorInfo:
    """A job's error: its code and message (``bgjob_job_get_error``)."""

    code: int
    message: str


@dataclasses.dataclass(frozen=True)
class JobEntry:
    """One live job of ``list_jobs()``: enough to find a stuck one."""

    id: int
    state: State
    name: str
    phase: str
    age: float
    since_progress: float | None
    operation: str = ""
    owner: str = ""
    pause_count: int = 0
    cancel_requested: bool = False
    cancel_cause: CancelCause = CancelCause.NONE
    parent_id: int = 0
    """The parent job's id (``Job(..., parent=...)``), 0 for none."""


# ---------------------------------------------------------------- workers


class Worker:
    """What a Python worker gets as its first argument: progress, phase,
    cancellation checks, a cancellable sleep and cancellation hooks for its own
    job. Every progress call is also a pause point: while the job is paused the
    worker parks there (with the GIL released) -- unless the job was made with
    ``updates_never_park=True``: then only ``pause_point``, ``sleep`` and the
    waits park."""

    __slots__ = ("_h", "name", "_stats")

    def __init__(self, handle: Any, name: str, stats: Mapping[str, tuple[int, StatType]] | None = None):
        self._h = handle
        self.name = name
        self._stats = stats if stats is not None else {}

    def __repr__(self) -> str:
        try:
            return f"<bgjob.Worker of job {self.name!r} ({self.info.state})>"
        except BgjobError:
            return f"<bgjob.Worker of job {self.name!r}>"

    def _check(self, r: int, what: str) -> None:
        if r == Result.CANCELLED:
            raise Cancelled(f"{what}: job {self.name!r} was cancelled")
        check(r, what)

    @property
    def info(self) -> Info:
        """A snapshot of the worker's own job (e.g. ``info.elapsed``, active time)."""
        c = _ffi.bgjob_info(struct_size=sizeof(_ffi.bgjob_info))
        check(lib.bgjob_job_get_info(self._h, byref(c)), "info")
        return Info._from_c(c, _text(lib.bgjob_job_get_phase, self._h, "info"))

    # cancellation
    @property
    def cancelled(self) -> bool:
        """Whether cancel was requested (never blocks)."""
        r = lib.bgjob_job_check_cancel(self._h)
        if r == Result.CANCELLED:
            return True
        check(r, "check_cancel")
        return False

    def check_cancel(self) -> None:
        """Raises ``Cancelled`` once cancel was requested; let it propagate and
        the job ends CANCELLED."""
        self._check(lib.bgjob_job_check_cancel(self._h), "check_cancel")

    def pause_point(self) -> None:
        """Parks here while the job is paused; raises ``Cancelled`` once cancel
        was requested."""
        self._check(lib.bgjob_job_pause_point(self._h), "pause_point")

    def sleep(self, seconds: float) -> None:
        """Sleeps for ``seconds`` of active time (paused time does not count);
        a cancel ends it at once with ``Cancelled``; a complete request
        (``Job.complete``) ends it early without an error (check
        ``complete_requested``)."""
        self._check(lib.bgjob_job_sleep(self._h, _ms(seconds, "sleep")), "sleep")

    # READY and complete (QEMU's block-job model)
    def set_ready(self) -> None:
        """Says the job is ready (a mirror converged): RUNNING becomes READY
        (PAUSED: STANDBY). It keeps running until ``Job.complete()`` or a
        cancel. Idempotent."""
        check(lib.bgjob_job_set_ready(self._h), "set_ready")

    @property
    def complete_requested(self) -> bool:
        """Whether complete was requested; reading it here (on the worker's
        thread) acknowledges the wake, so sleeps and fd waits stop returning
        early for it."""
        out = c_bool()
        check(lib.bgjob_job_complete_requested(self._h, byref(out)), "complete_requested")
        return out.value

    @property
    def cancel_is_soft(self) -> bool:
        """Whether the cancel request is a soft one (``Job.cancel(soft=True)``
        on a READY job): finish without pivoting and return normally, and the
        job completes."""
        out = c_bool()
        check(lib.bgjob_job_cancel_is_soft(self._h, byref(out)), "cancel_is_soft")
        return out.value

    def add_cancel_hook(self, fn: Callable[[], Any]) -> int | None:
        """Registers ``fn()`` to be called at most once, on the cancelling
        thread, when the job is cancelled; returns its id for
        ``remove_cancel_hook``. If cancel was already requested, ``fn`` runs now
        and None is returned. A hook not yet called when the worker returns
        (it saw the cancel first) is dropped uncalled; the job does not end
        while a hook runs."""
        if not callable(fn):
            raise TypeError(f"add_cancel_hook: expected a callable, not {type(fn).__name__}")
        hook_id = c_uint64()
        key = _hold(fn, tracked=True)
        r = lib.bgjob_job_add_cancel_hook(self._h, _hook_cb, key, _free_cb, byref(hook_id))
        if r == Result.CANCELLED:
            return None
        check(r, "add_cancel_hook")
        return hook_id.value

    def remove_cancel_hook(self, hook_id: int) -> bool:
        """Removes a hook; True if it had not run (it never will now), False if
        it already ran or was dropped at the job's end. On return the hook is
        not running."""
        r = lib.bgjob_job_remove_cancel_hook(self._h, _u64(hook_id, "remove_cancel_hook"))
        if r == Result.NOT_FOUND:
            return False
        check(r, "remove_cancel_hook")
        return True

    @contextlib.contextmanager
    def cancel_hook(self, fn: Callable[[], Any]) -> Iterator[int | None]:
        """``with worker.cancel_hook(fn):`` -- ``fn`` is a cancellation hook for
        the duration of the block (e.g. one that closes a socket or kills a
        child process the block waits on)."""
        hook_id = self.add_cancel_hook(fn)
        try:
            yield hook_id
        finally:
            if hook_id is not None:
                self.remove_cancel_hook(hook_id)

    # cancellable waits and child processes
    @property
    def wake_fd(self) -> int:
        """An fd readable once cancel was requested (and while a pause or an
        unacknowledged complete request is pending), for a worker with its own ``select``/``poll``: when it turns
        readable, call ``pause_point()``. bgjob owns it: do not close it."""
        fd = c_int32()
        check(lib.bgjob_job_get_wake_fd(self._h, byref(fd)), "wake_fd")
        return fd.value

    def wait_fd(self, fd: Any, events: int = _ffi.FD_READABLE, timeout: float | None = None) -> int:
        """Waits until ``fd`` (a number or an object with ``fileno()``) is ready
        for ``events`` (``bgjob.FD_READABLE``/``FD_WRITABLE``), for at most
        ``timeout`` seconds of active time; returns the ``FD_*`` bits that
        happened, or 0 when a complete request (``Job.complete``) woke it
        (check ``complete_requested``). Raises ``Cancelled`` at once on
        cancel, ``TimedOut``."""
        fileno = _cint(fd if isinstance(fd, int) else fd.fileno(), "wait_fd fd")
        ev = _cint(events, "wait_fd events", 0, _U32_MAX)
        revents = ctypes.c_uint32()
        r = lib.bgjob_job_wait_fd(self._h, fileno, ev, _ms(timeout, "wait_fd"), byref(revents))
        self._check(r, "wait_fd")
        return revents.value

    def report_io_error(self, error: OSError | int, message: str | None = None) -> ErrorAction:
        """Reports an I/O error (an ``OSError`` or an errno) to the job's error
        policy and returns what to do: REPORT (give up: raise), IGNORE (carry
        on) or STOP (the job is now paused).

        A worker calls it on its own thread; after STOP it calls
        ``pause_point()`` (which parks until a resume), then retries. An
        external job's owner (``Job.driver``) calls it from any thread, as a
        QEMU driver does on ``BLOCK_JOB_ERROR``: STOP then pauses the job
        (PAUSED, ``iostatus`` FAILED or NOSPACE) without telling the job's
        ``control`` callable, and the resume that follows is one
        ``Control.RESUME``; REPORT records the error as the job's, to end it
        with. Raises ``NotAllowed`` unless the job is running."""
        if isinstance(error, OSError):
            code = _errno_of(error)
            message = message if message is not None else str(error)
        else:
            code = _cint(error, "report_io_error")
        action = c_int32()
        text = _cstr(message, "report_io_error message", "replace") if message is not None else None
        check(lib.bgjob_job_report_io_error(self._h, code, text, byref(action)), "report_io_error")
        return ErrorAction(action.value)

    def spawn(
        self,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        stdout: str = "inherit",
        stderr: str = "inherit",
        stdin: str = "null",
        on_line: Callable[[int, str], Any] | None = None,
        grace: float | None = None,
    ) -> int:
        """Starts a child process bound to the job and returns its pid: cancel
        sends it SIGTERM, then SIGKILL after ``grace`` seconds; it is killed
        and reaped if still running when the worker returns. ``stdout`` and
        ``stderr``: "inherit", "null" or "capture" (lines go to
        ``on_line(stream, line)`` during ``wait_child``, stream 1 or 2);
        ``stdin``: "null" or "inherit"."""
        flags = 0
        for value, what, capture, null in (
            (stdout, "stdout", _ffi.CHILD_CAPTURE_STDOUT, _ffi.CHILD_NULL_STDOUT),
            (stderr, "stderr", _ffi.CHILD_CAPTURE_STDERR, _ffi.CHILD_NULL_STDERR),
        ):
            if value not in ("inherit", "null", "capture"):
                raise InvalidArgument(f"spawn: {what}={value!r}: use inherit, null or capture")
            flags |= capture if value == "capture" else null if value == "null" else 0
        if stdin not in ("null", "inherit"):
            raise InvalidArgument(f"spawn: stdin={stdin!r}: use null or inherit")
        if stdin == "inherit":
            flags |= _ffi.CHILD_INHERIT_STDIN
        args = [_cpath(a, "spawn argv") for a in argv]
        opts = _ffi.bgjob_child_options()
        check(lib.bgjob_child_options_init(byref(opts), sizeof(opts)), "child_options_init")
        opts.flags = flags
        c_argv = (ctypes.c_char_p * (len(args) + 1))(*args, None)
        opts.argv = c_argv
        if env is not None:
            entries = []
            for k, v in env.items():
                key = _cpath(k, "spawn env")
                if not key or b"=" in key:
                    raise InvalidArgument(f"spawn env: {k!r} is not a variable name (empty, or holds '=')")
                entries.append(key + b"=" + _cpath(v, "spawn env"))
            c_envp = (ctypes.c_char_p * (len(entries) + 1))(*entries, None)
            opts.envp = c_envp
        if cwd is not None:
            opts.cwd = _cpath(cwd, "spawn cwd")
        if grace is not None:
            opts.grace_ms = _ms(grace, "spawn grace")
        pid = c_int32()
        if on_line is not None:
            if not callable(on_line):
                raise TypeError(f"spawn: on_line must be callable, not {type(on_line).__name__}")
            opts.on_line = _line_cb
            opts.line_free = _free_cb
            opts.line_userdata = _hold(on_line, tracked=True)  # freed on every path
        check(lib.bgjob_job_spawn_child(self._h, byref(opts), byref(pid)), f"spawn {argv[0] if argv else ''}")
        return pid.value

    def watch_child(self, pid: int, grace: float | None = None) -> None:
        """Binds a child this process started itself to the job, as ``spawn``
        does; from now on only bgjob may wait for it (``wait_child``)."""
        g = _ffi.CHILD_DEFAULT_GRACE_MS if grace is None else _ms(grace, "watch_child grace")
        check(lib.bgjob_job_watch_child(self._h, _cint(pid, "watch_child pid"), g), "watch_child")

    def wait_child(self, pid: int, timeout: float | None = None) -> int:
        """Waits for a bound child (delivering its captured lines here) and
        returns its return code as ``subprocess`` does (``-N`` for signal N).
        Raises ``Cancelled`` once the cancelled child is gone, ``TimedOut``
        after ``timeout`` seconds of active time (the child runs on)."""
        status = c_int32()
        r = lib.bgjob_job_wait_child(self._h, _cint(pid, "wait_child pid"), _ms(timeout, "wait_child"), byref(status))
        self._check(r, "wait_child")
        return os.waitstatus_to_exitcode(status.value)

    def run(self, argv: list[str], **options: Any) -> int:
        """``spawn`` then ``wait_child``: runs a program to its end (or until
        the job is cancelled) and returns its return code."""
        return self.wait_child(self.spawn(argv, **options))

    # progress
    def set_total(self, total: int) -> None:
        """Units in all (bytes, blocks...); 0 means unknown. May move either way."""
        self._check(lib.bgjob_job_set_total(self._h, _u64(total, "set_total")), "set_total")

    def set_current(self, current: int) -> None:
        """Units done; it only grows (a smaller value raises InvalidArgument)."""
        self._check(lib.bgjob_job_set_current(self._h, _u64(current, "set_current")), "set_current")

    def add(self, units: int = 1) -> None:
        """Adds to the units done: the cheap call, once per block."""
        self._check(lib.bgjob_job_add_units(self._h, _u64(units, "add")), "add")

    def set_percent(self, percent: int | None) -> None:
        """Sets the percent directly (0-100); None goes back to units."""
        p = -1 if percent is None else _cint(percent, "set_percent", -1, 100)
        self._check(lib.bgjob_job_set_percent(self._h, p), "set_percent")

    def set_eta(self, seconds: float | None) -> None:
        """The worker's own estimate of the time left; None: bgjob's estimate."""
        self._check(lib.bgjob_job_set_eta(self._h, _ms(seconds, "set_eta")), "set_eta")

    @property
    def phase(self) -> str:
        """The phase name ("copying", "cleaning up"); settable."""
        return _text(lib.bgjob_job_get_phase, self._h, "get_phase")

    @phase.setter
    def phase(self, phase: str) -> None:
        self._check(lib.bgjob_job_set_phase(self._h, _cstr(phase, "set_phase")), "set_phase")

    # statistics
    def set_stat(self, stat: str | int, value: StatValue) -> None:
        """Sets one declared statistic (by name or index) to a value of its
        type. Like a progress call, a pause point on the job's own thread."""
        self._check(_set_stat(self._h, self._stats, stat, value), "set_stat")

    def set_stats(self, values: Mapping[str | int, StatValue]) -> None:
        """Sets several statistics as one update: a reader sees all or none."""
        self._check(_set_stats(self._h, self._stats, values), "set_stats")


class _Run:
    """A Python worker: what the job's thread runs, and what it left."""

    __slots__ = ("fn", "args", "kwargs", "context", "name", "job_id", "exception", "thread", "stats")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any], name: str):
        self.fn = fn
        self.args = args
        self.kwargs = dict(kwargs)
        # The worker sees the creator's contextvars (a copy), as with
        # asyncio.to_thread.
        self.context = contextvars.copy_context()
        self.name = name
        self.job_id = 0
        self.exception: BaseException | None = None
        self.thread: int | None = None  # while the worker runs
        # Declared statistics, name -> (index, type); fixed once started.
        self.stats: dict[str, tuple[int, StatType]] = {}

    def __call__(self, handle: Any) -> int:
        worker = Worker(handle, self.name, self.stats)
        self.thread = threading.get_ident()
        # The thread is named after the job while the worker runs, for
        # logging's %(threadName)s (the OS thread already is).
        current = threading.current_thread()
        saved = current.name
        current.name = self.name
        outer = getattr(_tls, "worker", None)
        _tls.worker = worker
        try:
            return self._call(worker, handle)
        finally:
            _tls.worker = outer
            current.name = saved
            self.thread = None
            # A worker runs once: what it was given goes now. The call's
            # frames may outlive it (a traceback kept anywhere reaches this
            # frame and the _Run), and must not keep the callable's captures
            # alive -- an Executor's future, and through it the Job, whose
            # handle is destroyed only when the Job is collected.
            self.fn = _no_worker
            self.args, self.kwargs = (), {}
            self.context = _EMPTY_CONTEXT

    def _call(self, worker: Worker, handle: Any) -> int:
        try:
            value = self.context.run(self.fn, worker, *self.args, **self.kwargs)
        except Cancelled:
            if lib.bgjob_job_check_cancel(handle) == Result.CANCELLED:
                return errno.ECANCELED  # the job ends CANCELLED
            return self._fail(handle, *_exc())
        except BaseException:
            return self._fail(handle, *_exc())
        if inspect.iscoroutine(value) or inspect.isasyncgen(value):
            # An async callable got past the check in Job(): its body never
            # ran. Refused rather than "completed" with a coroutine result.
            if inspect.iscoroutine(value):
                value.close()
            try:
                raise TypeError(
                    f"bgjob: the worker of job {self.name!r} returned {type(value).__name__} {value!r}: "
                    "workers are plain functions run on the job's thread; run a coroutine on a "
                    "loop instead (asyncio.run_coroutine_threadsafe, or `await` it in a task)"
                )
            except TypeError:
                return self._fail(handle, *_exc())
        if value is not None:
            # The value lives in _keep until bgjob frees the result (replaced,
            # destroyed) or it is taken.
            key = _hold(value, tracked=False)
            check(lib.bgjob_job_set_result(handle, key, _free_cb), "set_result")
        return 0

    def _fail(self, handle: Any, exc: BaseException, code: int) -> int:
        self.exception = exc
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        # result() and `await job` raise it as itself, in the caller's thread:
        # the note says which job it came from (printed by tracebacks on 3.11+,
        # in __notes__ on every version).
        _add_note(exc, f"raised by the worker of bgjob job {self.name!r} (id {self.job_id})")
        lib.bgjob_job_set_error(handle, code, text.replace("\0", "\\0").encode("utf-8", "replace"))
        return code


def _add_note(exc: BaseException, note: str) -> None:
    try:
        if sys.version_info >= (3, 11):
            exc.add_note(note)
        else:
            notes = getattr(exc, "__notes__", None)
            exc.__notes__ = [*notes, note] if isinstance(notes, list) else [note]  # type: ignore[attr-defined]
    except Exception:  # an exception type that refuses attributes: no note
        pass


def _exc() -> tuple[BaseException, int]:
    exc = sys.exc_info()[1]
    assert exc is not None
    return exc, _errno_of(exc)


def _worker(key: int, handle: Any) -> int:
    try:
        run = _keep[key][0]
        code: int = run(handle)
        return code
    except BaseException:
        return EXCEPTION_CODE


_worker_cb = _ffi.bgjob_worker_callback(_worker)


def _complete(key: int, handle: Any, state: int) -> None:
    try:
        job = _keep[key][0].get()
        if job is not None:
            job._ended(State(state), run_callback=True)
    except BaseException as e:
        _report(e)


_complete_cb = _ffi.bgjob_completion_callback(_complete)


def _hook(key: int, handle: Any) -> None:
    try:
        _keep[key][0]()
    except BaseException as e:
        _report(e)


_hook_cb = _ffi.bgjob_cancel_hook_callback(_hook)


def _line(key: int, handle: Any, stream: int, line: bytes, length: int) -> None:
    try:
        _keep[key][0](stream, line[:length].decode("utf-8", "replace"))
    except BaseException as e:
        _report(e)


_line_cb = _ffi.bgjob_line_callback(_line)


class _JobRef:
    """A job's completion userdata. It holds the Job weakly until the job is
    started, so a Job dropped before it ever ran is collected (and its job
    destroyed), and strongly from then on, so a running job's Job lives until
    its completion has run or been dropped."""

    __slots__ = ("weak", "strong")

    def __init__(self, job: Job[Any]):
        self.weak = weakref.ref(job)
        self.strong: Job[Any] | None = None

    def get(self) -> Job[Any] | None:
        return self.strong if self.strong is not None else self.weak()


@dataclasses.dataclass(frozen=True)
class Event:
    """One event of a job, as ``Job(on_event=fn)`` gets it: ``fn(job, event)``.

    ``kind`` says what happened: STATE_CHANGED (``old_state`` to
    ``new_state``), IO_ERROR (``action`` and ``error_code`` set; a STOP is
    followed by the change to PAUSED), READY, CONTROL_FAILED (the owner said
    a forwarded verb failed: ``error_code`` set, ``Job.control_error`` has
    the rest), END (last, ``new_state`` the terminal state, before
    ``on_complete``). ``seq`` counts the job's
    changes from 1; when nobody delivers a job's events for a while (its
    context is not dispatched), consecutive state changes past the bound
    (``EVENT_QUEUE_BOUND``) merge into one, ``coalesced`` counting the extra
    changes it holds (``seq`` then grows by ``coalesced + 1``)."""

    kind: EventKind
    old_state: State
    new_state: State
    seq: int
    coalesced: int = 0
    action: ErrorAction | None = None
    error_code: int = 0


class ControlError(NamedTuple):
    """A forwarded verb the job's owner said failed (``Job.control_error``)."""

    what: Control
    code: int
    message: str


#: Queued events per job past which consecutive state changes merge.
EVENT_QUEUE_BOUND = _ffi.EVENT_QUEUE_BOUND


class _EventSink:
    """A job's event callback and its Job (weakly until started, like the
    completion's)."""

    __slots__ = ("ref", "fn")

    def __init__(self, ref: _JobRef, fn: Callable[..., Any]):
        self.ref, self.fn = ref, fn


class _ControlFn:
    """A job's ``control`` callable, called with its Job, the Control and
    the argument."""

    __slots__ = ("ref", "fn")

    def __init__(self, ref: _JobRef, fn: Callable[..., Any]):
        self.ref, self.fn = ref, fn


def _event(key: int, handle: Any, ev: Any) -> None:
    try:
        sink = _keep[key][0]
        job = sink.ref.get()
        e = ev.contents
        kind = EventKind(e.kind)
        event = Event(
            kind=kind,
            old_state=State(e.old_state),
            new_state=State(e.new_state),
            seq=e.seq,
            coalesced=e.coalesced,
            action=ErrorAction(e.action) if kind == EventKind.IO_ERROR else None,
            error_code=e.error_code,
        )
        if job is not None:
            sink.fn(job, event)
    except BaseException as exc:
        _user_error(exc)


_event_cb = _ffi.bgjob_event_callback(_event)


def _control(key: int, handle: Any, what: int, arg: int) -> None:
    try:
        c = _keep[key][0]
        job = c.ref.get()
        if job is not None:
            c.fn(job, Control(what), arg)
    except BaseException as e:
        _report(e)


_control_cb = _ffi.bgjob_control_callback(_control)


def _no_worker(worker: Any) -> None:
    """Stands in for an external job's worker (never called)."""


_NO_WORKER = _ffi.bgjob_worker_callback()


class _Finalizers:
    """A job's commit/abort/clean callables, called with its Job."""

    __slots__ = ("ref", "commit", "abort", "clean")

    def __init__(self, ref: _JobRef, commit: Any, abort: Any, clean: Any):
        self.ref, self.commit, self.abort, self.clean = ref, commit, abort, clean


def _finalizer(which: str) -> Any:
    def call(key: int, handle: Any) -> None:
        try:
            f = _keep[key][0]
            fn = getattr(f, which)
            job = f.ref.get()
            if fn is not None and job is not None:
                fn(job)
        except BaseException as e:
            _report(e)

    return _ffi.bgjob_finalize_callback(call)


_commit_cb = _finalizer("commit")
_abort_cb = _finalizer("abort")
_clean_cb = _finalizer("clean")


def _log(key: int, line: bytes) -> None:
    try:
        _keep[key][0](line.decode("utf-8", "replace"))
    except BaseException as e:
        _report(e)


_log_cb = _ffi.bgjob_log_callback(_log)


_NO_LOG = _ffi.bgjob_log_callback()
# What a finished _Run holds instead of the creator's contextvars.
_EMPTY_CONTEXT = contextvars.Context()

# Job(context=_NO_CONTEXT): completion on the job's thread even inside a loop.
_NO_CONTEXT: Any = object()
_NO_FREE = _ffi.bgjob_free_callback()


# ---------------------------------------------------------------- jobs


class Job(Generic[T]):
    """A background job running ``fn(worker, *args, **kwargs)`` on its own thread.

    ``Job(fn, *args, kwargs={...}, name=..., total=...)`` creates and starts it
    (``start=False`` leaves it CREATED until ``start()``); the worker's keyword
    arguments go in ``kwargs``, apart from bgjob's own options, and an unknown
    option is a TypeError. The worker runs in a copy of the creator's
    contextvars (as ``asyncio.to_thread``), on a thread named after the job
    (``threading.current_thread().name``, logging's ``threadName``).
    ``fn``'s return value becomes the
    job's ``result()``; an exception ends the job FAILED with the exception's text
    as its error message, and ``result()`` raises it as itself (``Cancelled``
    after a cancel request: CANCELLED).

    It is read like a ``concurrent.futures.Future``: ``result(timeout)``,
    ``exception(timeout)``, ``done()``, ``cancelled()``, ``running()``,
    ``add_done_callback(fn)``; ``bgjob.wait`` and ``bgjob.as_completed`` take
    several jobs; ``await job`` in asyncio.

    ``on_complete(job)`` runs once when the job has ended: on the thread that
    dispatches ``context``; without a context, on the job's thread -- except
    when the job is created inside a running asyncio loop, which then gets it
    through that loop's own context (``loop_context``).

    ``on_event(job, event)`` gets every ``Event`` of the job in order (each
    state change, I/O errors, READY, END before ``on_complete``): through the
    same context as the completion when there is one, else on the thread that
    made the change (a caller's ``pause()`` runs it inside that call); never
    two of one job's at once. An exception from it is raised by the
    ``Context.dispatch`` running it, or reported like a thread's.

    Use it in ``with``: on exit a job still running is cancelled and waited
    for, then the handle is released. ``close()`` does the same, once.

    ``Job(None, external=True)`` makes an external job: no worker and no
    thread; its owner (an event loop, say) drives it from any thread -- the
    progress and phase setters, ``set_error`` -- and ends it with
    ``end(code, message)``. ``control(job, what, arg)``, a callable, is told
    of each verb that took effect (``Control.CANCEL`` with arg 1,
    ``PAUSE``, ``RESUME``, ``SET_SPEED`` with the speed), on the thread that
    called the verb, with no bgjob lock held, never after the end; it works
    for threaded jobs too.
    """

    _h: Any  # the C handle (a JobPtr)

    def __init__(
        self,
        fn: Callable[..., T] | None,
        *args: Any,
        kwargs: Mapping[str, Any] | None = None,
        name: str | None = None,
        total: int | None = None,
        unbounded: bool = False,
        stack_size: int = 0,
        context: Context | None = None,
        on_complete: Callable[[Job[T]], Any] | None = None,
        start: bool = True,
        deadline: float | None = None,
        error_policy: ErrorPolicy = ErrorPolicy.REPORT,
        manual_finalize: bool = False,
        on_commit: Callable[[Job[T]], Any] | None = None,
        on_abort: Callable[[Job[T]], Any] | None = None,
        on_clean: Callable[[Job[T]], Any] | None = None,
        updates_never_park: bool = False,
        parent: Job[Any] | JobHandle | None = None,
        on_event: Callable[[Job[T], Event], Any] | None = None,
        operation: str | None = None,
        owner: str | None = None,
        stats: Mapping[str, StatType | tuple[StatType, str]] | None = None,
        external: bool = False,
        control: Callable[[Job[T], Control, int], Any] | None = None,
    ):
        self._closed = True  # until the handle exists (for __del__)
        if _shutting_down:
            raise RuntimeError("bgjob: the interpreter is shutting down; no new jobs")
        if external:
            if fn is not None:
                raise TypeError("bgjob: an external job has no worker: pass None as fn")
            fn = cast("Callable[..., T]", _no_worker)
        elif not callable(fn):
            raise TypeError(f"bgjob: the worker must be callable, not {type(fn).__name__}")
        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            raise TypeError(
                f"bgjob: the worker {getattr(fn, '__qualname__', fn)!r} is an async function; a worker "
                "is a plain function run on the job's thread (await a coroutine in an asyncio task "
                "instead, or call asyncio.run inside a plain worker)"
            )
        for opt, value in (
            ("on_event", on_event),
            ("on_complete", on_complete),
            ("on_commit", on_commit),
            ("on_abort", on_abort),
            ("on_clean", on_clean),
        ):
            if value is not None and not callable(value):
                raise TypeError(f"bgjob: {opt} must be callable, not {type(value).__name__}")
        if context is _NO_CONTEXT:
            context = None
        elif context is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                context = loop_context(loop)
        self._lock = threading.Lock()
        self._done = False
        self._final: State | None = None
        self._observed = False  # result, exception or error looked at
        self._waiters: list[asyncio.Future[State | None]] = []
        # on_complete, then add_done_callback's: run by the job's completion.
        self._callbacks: list[Callable[[Job[T]], Any]] = [] if on_complete is None else [on_complete]
        self._context = context  # kept alive while its completion may come
        self._run = _Run(cast("Callable[..., Any]", fn), args, kwargs or {}, name or "")

        opts = _ffi.bgjob_job_options()
        check(lib.bgjob_job_options_init(byref(opts), sizeof(opts)), "options_init")
        opts.job_type = JobType.UNBOUNDED if unbounded else JobType.BOUNDED
        # Always deferred, so the total is in place before the worker runs.
        opts.flags = _ffi.CREATE_DEFER_START
        if manual_finalize:
            opts.flags |= _ffi.CREATE_MANUAL_FINALIZE
        if updates_never_park:
            opts.flags |= _ffi.CREATE_UPDATES_NEVER_PARK
        if external:
            opts.flags |= _ffi.CREATE_EXTERNAL
        if control is not None and not callable(control):
            raise TypeError(f"bgjob: control must be callable, not {type(control).__name__}")
        if control is not None:
            opts.control, opts.control_free = _control_cb, _free_cb
        if deadline is not None:
            opts.deadline_ms = max(1, _ms(deadline, "deadline"))
        opts.error_policy = ErrorPolicy(error_policy)
        finalizers = on_commit is not None or on_abort is not None or on_clean is not None
        if finalizers:
            opts.commit, opts.abort, opts.clean = _commit_cb, _abort_cb, _clean_cb
            opts.finalize_free = _free_cb
        name_b = _cstr(name, "name") if name is not None else None
        opts.name = name_b
        operation_b = _cstr(operation, "operation") if operation is not None else None
        owner_b = _cstr(owner, "owner") if owner is not None else None
        opts.operation = operation_b
        opts.owner = owner_b
        opts.stack_size = _cint(stack_size, "stack_size", 0, (1 << (8 * sizeof(c_size_t))) - 1)
        if context is not None:
            opts.context = context._handle("create")
        if parent is not None:
            if not isinstance(parent, (Job, JobHandle)):
                raise TypeError(f"bgjob: parent must be a Job or JobHandle, not {type(parent).__name__}")
            opts.parent = parent._h
        opts.completion = _complete_cb
        opts.completion_free = _free_cb
        # Every conversion that runs the caller's code (an __index__, a
        # mapping's items, a str subclass's encode) comes before the create:
        # after it, only bgjob's own calls are made (see the except below).
        total_n = None if total is None else _u64(total, "total")
        stat_specs = [
            _stat_spec(stat_name, *(spec if isinstance(spec, tuple) else (spec, "")))
            for stat_name, spec in (stats or {}).items()
        ]
        handle = JobPtr()
        # Nothing may fail between holding the keys and the create call: from
        # there on, bgjob frees both on every path (before returning, if the
        # create fails).
        self._ref = _JobRef(self)
        opts.completion_userdata = _hold(self._ref, tracked=True)
        if finalizers:
            opts.finalize_userdata = _hold(
                _Finalizers(self._ref, on_commit, on_abort, on_clean), tracked=True
            )
        if on_event is not None:
            opts.event = _event_cb
            opts.event_free = _free_cb
            opts.event_userdata = _hold(_EventSink(self._ref, on_event), tracked=True)
        if control is not None:
            opts.control_userdata = _hold(_ControlFn(self._ref, control), tracked=True)
        r = lib.bgjob_job_create(
            byref(opts),
            _NO_WORKER if external else _worker_cb,
            _hold(self._run, tracked=True),
            _free_cb,
            byref(handle),
        )
        check(r, "create")
        self._h = handle
        self._closed = False
        id_ = c_uint64()
        check(lib.bgjob_job_get_id(handle, byref(id_)), "get_id")
        self.id = id_.value
        self._run.job_id = self.id
        if not name:
            self._run.name = self.name
        try:
            if total_n is not None:
                check(lib.bgjob_job_set_total(handle, total_n), "set_total")
            for spec_ in stat_specs:
                self._add_stat(*spec_)
            if start:
                self.start()
        except NotAllowed:
            # Another thread cancelled the job between its create and here
            # (cancel_all, the exit hook, a cancelled parent): a CREATED
            # job's cancel ends it at once, and the set_total, add_stat or
            # start that came after is refused. The job is made all the
            # same, ended as that cancel asked, as if the cancel had come a
            # moment after its start -- and like a started job's, this Job
            # lives until its completion (which comes later, on a thread of
            # bgjob's) has run, so its on_complete is not lost.
            if not self._cancelled_before_start():
                self.close()
                raise
            if start:
                with self._lock:
                    if not self._done:
                        self._ref.strong = self
        except BaseException:
            self.close()
            raise

    def _cancelled_before_start(self) -> bool:
        """Whether a cancel reached the job before its start: it ended, or
        (given a sub-job meanwhile) waits for its sub-jobs, cancelled."""
        st = c_int32()
        if lib.bgjob_job_get_state(self._h, byref(st)) != Result.OK or st.value == State.CREATED:
            return False
        if st.value == State.CANCELLED:
            return True
        c = _ffi.bgjob_info(struct_size=sizeof(_ffi.bgjob_info))
        return lib.bgjob_job_get_info(self._h, byref(c)) == Result.OK and bool(c.cancel_requested)

    def __repr__(self) -> str:
        if self._closed:
            return f"<bgjob.Job {self._run.name!r} closed>"
        try:
            return f"<bgjob.Job {self._run.name!r} {self.state}>"
        except BgjobError:
            return f"<bgjob.Job {self._run.name!r}>"

    # -- C calls on the handle
    def _call(self, r: int, what: str) -> None:
        if r != Result.OK:
            exc = error_for(r, what)
            if r == Result.INVALID_HANDLE and self._closed:
                exc = InvalidHandle(f"{what}: job {self._run.name!r} is closed")
            raise exc

    # -- reading
    @property
    def state(self) -> State:
        st = c_int32()
        self._call(lib.bgjob_job_get_state(self._h, byref(st)), "state")
        return State(st.value)

    @property
    def info(self) -> Info:
        """One consistent snapshot (never waits on the worker)."""
        c = _ffi.bgjob_info(struct_size=sizeof(_ffi.bgjob_info))
        self._call(lib.bgjob_job_get_info(self._h, byref(c)), "info")
        return Info._from_c(c, _text(lib.bgjob_job_get_phase, self._h, "info"))

    def _text(self, fn: Callable[..., int], what: str) -> str:
        """One of the job's texts (name, phase, operation, owner)."""
        if self._closed:
            self._call(Result.INVALID_HANDLE, what)
        return _text(fn, self._h, what)

    @property
    def name(self) -> str:
        return self._text(lib.bgjob_job_get_name, "name")

    @property
    def phase(self) -> str:
        return self._text(lib.bgjob_job_get_phase, "phase")

    @property
    def operation(self) -> str:
        """The operation given at create ("mirror", "save"; "" for none)."""
        return self._text(lib.bgjob_job_get_operation, "operation")

    @property
    def owner(self) -> str:
        """The owner tag given at create ("domain vm1"; "" for none)."""
        return self._text(lib.bgjob_job_get_owner, "owner")

    # -- statistics
    def add_stat(self, name: str, type: StatType, unit: str = "") -> int:
        """Declares a statistic (only before start: ``start=False``, or the
        ``stats=`` option); returns its index. Names are unique per job."""
        return self._add_stat(*_stat_spec(name, type, unit))

    def _add_stat(self, name: str, name_b: bytes, type: StatType, unit_b: bytes) -> int:
        index = c_uint32()
        self._call(lib.bgjob_job_add_stat(self._h, name_b, int(type), unit_b, byref(index)), "add_stat")
        self._run.stats[name] = (index.value, type)
        return index.value

    def set_stat(self, stat: str | int, value: StatValue) -> None:
        """Sets a statistic from the owner's side (never parks)."""
        self._call(_set_stat(self._h, self._run.stats, stat, value), "set_stat")

    def set_stats(self, values: Mapping[str | int, StatValue]) -> None:
        """Sets several statistics as one update: a reader sees all or none."""
        self._call(_set_stats(self._h, self._run.stats, values), "set_stats")

    def stats(self) -> dict[str, StatValue]:
        """Every statistic, name -> value, in declaration order: one
        consistent read (a batch is seen whole), also after the job ended."""
        return {s.name: s.value for s in self.stat_list()}

    def stat_units(self) -> dict[str, str]:
        """Every statistic's unit, name -> unit ("" for none)."""
        return {s.name: s.unit for s in self.stat_list()}

    def stat_list(self) -> list[Stat]:
        """Every statistic with its type and unit."""
        if self._closed:
            self._call(Result.INVALID_HANDLE, "stats")
        return _read_stats(self._h, "stats", False)[1]

    def info_and_stats(self) -> tuple[Info, dict[str, StatValue]]:
        """The snapshot and the statistics read together, in one C call (see
        ``bgjob_job_get_stats`` for what consistent means)."""
        if self._closed:
            self._call(Result.INVALID_HANDLE, "stats")
        c, stats = _read_stats(self._h, "stats", True)
        assert c is not None
        return Info._from_c(c, _text(lib.bgjob_job_get_phase, self._h, "info")), {s.name: s.value for s in stats}

    @property
    def error(self) -> ErrorInfo | None:
        """The job's error code and message, or None while it has none."""
        if self._closed:
            self._call(Result.INVALID_HANDLE, "error")
        self._observed = True
        code = c_int32()
        message = _text(lib.bgjob_job_get_error, self._h, "error", byref(code))
        if code.value == 0 and not message:
            return None
        return ErrorInfo(code.value, message)

    # -- concurrent.futures.Future's reading side
    def done(self) -> bool:
        """Whether the job has ended (COMPLETED, FAILED or CANCELLED); never
        waits. ``concurrent.futures.Future.done``."""
        return self.state.terminal

    def cancelled(self) -> bool:
        """Whether the job ended CANCELLED (``Future.cancelled``). Not whether
        cancel was requested: that is ``info.cancel_requested``, and a worker
        may still complete after it."""
        return self.state == State.CANCELLED

    def running(self) -> bool:
        """Whether the job was started and has not ended yet (paused and
        waiting jobs included). ``Future.running``."""
        state = self.state
        return state != State.CREATED and not state.terminal

    def _ended_state(self, timeout: float | None) -> State:
        """The job's terminal state, waiting at most ``timeout`` seconds for it
        (``TimedOut`` then; ``NotAllowed`` for a job never started)."""
        state = self.state
        if not state.terminal:
            state = self.wait(timeout)
        self._observed = True
        return state

    def result(self, timeout: float | None = None) -> T:
        """The worker's return value, waiting for the job to end as
        ``concurrent.futures.Future.result`` does: at most ``timeout`` seconds
        (None: as long as it takes; 0: only look), then ``TimedOut`` (a
        ``TimeoutError``; the job runs on). A FAILED job raises the worker's
        own exception, as itself (``except FileNotFoundError`` works; a note
        names the job), or ``JobFailed`` when no Python exception ended it (or
        the worker raised a ``BaseException`` that is no ``Exception``, such
        as ``SystemExit``: that one is the ``__cause__``, never raised in the
        caller's thread). A CANCELLED job raises ``Cancelled``, or
        ``DeadlineExceeded`` (also a ``TimeoutError``) when its own deadline
        cancelled it. ``NotAllowed`` for a job never started."""
        state = self._ended_state(timeout)
        if state == State.COMPLETED:
            ptr = c_void_p()
            self._call(lib.bgjob_job_get_result(self._h, byref(ptr)), "result")
            return cast(T, _keep[ptr.value][0] if ptr.value else None)
        exc = self._outcome(state)
        try:
            raise exc
        finally:
            # The traceback keeps this frame: no Job -> exception -> frame ->
            # Job cycle (concurrent.futures.Future.result does the same).
            del exc
            self = None  # type: ignore[assignment]

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """What ``result()`` would raise for a FAILED job (the worker's own
        exception, or ``JobFailed``), None for a COMPLETED one; raises
        ``Cancelled`` for a CANCELLED one, as ``Future.exception`` raises
        ``CancelledError``. Waits as ``result(timeout)`` does."""
        state = self._ended_state(timeout)
        if state == State.COMPLETED:
            return None
        exc = self._outcome(state)
        if isinstance(exc, Cancelled) and state == State.CANCELLED:
            raise exc
        return exc

    def _outcome(self, state: State) -> BaseException:
        """The exception of a job that ended FAILED or CANCELLED."""
        worker_exc = self._run.exception
        if state == State.FAILED and isinstance(worker_exc, Exception):
            return worker_exc
        err = self.error or ErrorInfo(0, "")
        cls: type[JobError] = JobFailed
        if state == State.CANCELLED:
            cls = DeadlineExceeded if self.info.cancel_cause == CancelCause.TIMEOUT else Cancelled
        exc = cls(err.message, err.code, self._run.name)
        exc.__cause__ = worker_exc
        return exc

    def add_done_callback(self, fn: Callable[[Job[T]], Any]) -> None:
        """Calls ``fn(job)`` once the job has ended, where ``on_complete`` runs
        (after it): on the thread dispatching the job's context, on the loop
        for a job created inside a running loop, else on the job's thread. If
        that completion already ran, ``fn`` is called at once, here (an
        exception it raises is then logged to the ``bgjob`` logger, as
        ``concurrent.futures`` does). ``Future.add_done_callback``."""
        if not callable(fn):
            raise TypeError(f"add_done_callback: expected a callable, not {type(fn).__name__}")
        with self._lock:
            if self._closed:
                raise InvalidHandle(f"add_done_callback: job {self._run.name!r} is closed")
            if not self._done:
                self._callbacks.append(fn)
                return
        try:
            fn(self)
        except Exception:
            _logger.exception("bgjob: exception calling the done callback of job %r", self._run.name)

    # -- control
    def start(self) -> None:
        """Starts a job made with ``start=False``."""
        self._pin()
        try:
            self._call(lib.bgjob_job_start(self._h), "start")
        except BaseException:
            self._unpin()
            raise

    def _pin(self) -> None:
        # Before the job can run: from now on it keeps its Job alive.
        self._ref.strong = self

    def _unpin(self) -> None:
        # After a refused start: not started (CREATED), or already ended
        # and its completion run (a cancel came first) -- either way no
        # completion will let go of the pin any more.
        st = c_int32()
        with self._lock:
            if self._done or (lib.bgjob_job_get_state(self._h, byref(st)) == Result.OK and st.value == State.CREATED):
                self._ref.strong = None

    def cancel(self, soft: bool = False) -> CancelStatus:
        """Requests cancellation and returns at once; says which race it met.
        With ``soft=True`` on a READY or STANDBY job it is a soft cancel
        (QEMU's ``block-job-cancel`` without force): the worker sees the
        cancel, ``Worker.cancel_is_soft`` is true, no cancel hooks run, and a
        worker that returns normally completes the job; a later plain cancel
        makes it a force cancel. In other states ``soft`` changes nothing."""
        status = c_int32()
        if soft:
            self._call(lib.bgjob_job_cancel_soft(self._h, byref(status)), "cancel")
        else:
            self._call(lib.bgjob_job_cancel(self._h, byref(status)), "cancel")
        return CancelStatus(status.value)

    def set_ready(self) -> None:
        """Says the job is ready (the owner's side of ``Worker.set_ready``)."""
        self._call(lib.bgjob_job_set_ready(self._h), "set_ready")

    def complete(self) -> None:
        """Asks a READY job to finish (QEMU's ``job-complete``): wakes its
        worker, whose sleeps and fd waits return early, and sets
        ``complete_requested``. Raises ``NotAllowed`` outside READY."""
        self._call(lib.bgjob_job_complete(self._h), "complete")

    @property
    def complete_requested(self) -> bool:
        """Whether complete was requested (read only: it does not
        acknowledge the worker's wake)."""
        out = c_bool()
        self._call(lib.bgjob_job_complete_requested(self._h, byref(out)), "complete_requested")
        return out.value

    def pause(self) -> None:
        """Pauses a RUNNING job: its worker parks at its next pause point."""
        self._call(lib.bgjob_job_pause(self._h), "pause")

    def resume(self) -> None:
        """Resumes a PAUSED job."""
        self._call(lib.bgjob_job_resume(self._h), "resume")

    @property
    def driver(self) -> Worker:
        """The worker side of the job, for an external job's owner: progress
        (``set_total``, ``add``, ``set_percent``...), ``phase``,
        ``report_io_error``, cancel hooks -- from any thread, never parking.
        Calls that need a worker thread (``pause_point``, ``sleep``,
        ``wait_fd``, child processes) raise ``NotAllowed`` on an external job."""
        if self._closed:
            self._call(Result.INVALID_HANDLE, "driver")
        return Worker(self._h, self._run.name)

    def end(self, code: int = 0, message: str | None = None) -> None:
        """Ends an external job (``external=True``) as a worker's return
        would: ``code`` 0 completes it; any other fails it with that code and
        ``message`` -- or cancels it, after a cancel request. Any thread. An
        ``on_complete`` without a context runs here, before this returns.
        ``NotAllowed`` for a threaded job, one not started, and once ended."""
        msg = None if message is None else _cstr(message, "end message")
        self._call(lib.bgjob_job_end(self._h, _cint(code, "end"), msg), "end")

    @property
    def speed(self) -> int:
        """The speed limit in bytes/s (0: unlimited). Setting it tells the
        job's ``control`` callable (``Control.SET_SPEED``) when it changed."""
        out = c_uint64()
        self._call(lib.bgjob_job_get_speed(self._h, byref(out)), "speed")
        return out.value

    @speed.setter
    def speed(self, bytes_per_second: int) -> None:
        self._call(lib.bgjob_job_set_speed(self._h, _u64(bytes_per_second, "speed")), "speed")

    def set_deadline(self, seconds: float | None) -> None:
        """Cancels the job (cause TIMEOUT) once it has run ``seconds`` of active
        time since its start (0: at once); None removes the deadline."""
        ms = _ms(seconds, "set_deadline")
        self._call(lib.bgjob_job_set_deadline(self._h, ms), "set_deadline")

    def pause_internal(self) -> None:
        """An internal pause (QEMU's drain), counted apart from the user pause:
        the worker parks at its next pause point; the state stays RUNNING.
        Balance each with ``resume_internal``."""
        self._call(lib.bgjob_job_pause_internal(self._h), "pause_internal")

    def resume_internal(self) -> None:
        """Undoes one ``pause_internal``."""
        self._call(lib.bgjob_job_resume_internal(self._h), "resume_internal")

    def set_error_policy(self, policy: ErrorPolicy) -> None:
        """What ``Worker.report_io_error`` does from now on."""
        self._call(lib.bgjob_job_set_error_policy(self._h, _cint(policy, "set_error_policy")), "set_error_policy")

    def finalize(self) -> None:
        """Finalizes a ``manual_finalize`` job that is PENDING: its
        ``on_commit`` (or ``on_abort``) and ``on_clean`` run on this thread,
        the job WAITING while they do, then it ends. An external job whose owner reported PENDING
        (``report_state``) is not finalized here: its ``control`` callable is
        told ``Control.FINALIZE`` (QEMU's ``job-finalize``) and the owner's
        ``end()`` then finalizes it."""
        self._call(lib.bgjob_job_finalize(self._h), "finalize")

    def report_state(self, state: State) -> None:
        """For an external job's owner: reports WAITING, PENDING or ABORTING,
        the states of the work bgjob cannot infer (QEMU's
        ``JOB_STATUS_CHANGE``). Allowed from RUNNING, PAUSED, READY and
        STANDBY to any of the three, from WAITING to PENDING or ABORTING,
        from PENDING to ABORTING; the state the job is in again changes
        nothing. Raises ``NotAllowed`` (nothing changes) for any other
        transition, a threaded job and once ``end()`` was called,
        ``InvalidArgument`` for another state. Any thread, the ``control``
        callable included."""
        self._call(lib.bgjob_job_report_state(self._h, _cint(state, "report_state")), "report_state")

    def control_failed(self, what: Control, error: OSError | int, message: str | None = None) -> None:
        """For a job's owner: the verb ``what`` its ``control`` callable was
        told failed (QEMU answered with an error; ``error`` an ``OSError`` or
        a non-zero errno). The user sees it: an event
        ``EventKind.CONTROL_FAILED`` and ``control_error``. What the verb set
        is undone where bgjob can: PAUSE ends the user pause, COMPLETE clears
        ``complete_requested``, SET_SPEED restores the speed before the last
        change, FINALIZE drops the finalize request; CANCEL and RESUME change
        nothing. Raises ``NotAllowed`` once the job's work is done (``end()``
        called) or when it has no ``control`` callable."""
        if isinstance(error, OSError):
            code = _errno_of(error)
            message = message if message is not None else str(error)
        else:
            code = _cint(error, "control_failed")
        text = _cstr(message, "control_failed message", "replace") if message is not None else None
        self._call(lib.bgjob_job_control_failed(self._h, _cint(what, "control_failed what"), code, text), "control_failed")

    @property
    def control_error(self) -> ControlError | None:
        """The last failure reported with ``control_failed`` (``what``,
        ``code``, ``message``), or None. Readable until the job is closed."""
        found = c_bool()
        what = c_int32()
        code = c_int32()
        need = ctypes.c_size_t()
        buf = ctypes.create_string_buffer(256)
        self._call(
            lib.bgjob_job_get_control_error(
                self._h, byref(found), byref(what), byref(code), buf, len(buf), byref(need)
            ),
            "control_error",
        )
        if not found.value:
            return None
        if need.value >= len(buf):
            buf = ctypes.create_string_buffer(need.value + 1)
            self._call(
                lib.bgjob_job_get_control_error(self._h, byref(found), None, None, buf, len(buf), None),
                "control_error",
            )
        return ControlError(Control(what.value), code.value, buf.value.decode("utf-8", "replace"))

    def wait_state(self, state: State, timeout: float | None = None) -> State:
        """Waits until the job is in ``state`` (READY, PENDING, any state)
        or has ended, and returns the state found: ``state``, or the
        terminal state it ended in instead (a state passed through between
        two looks may be missed; ``on_event`` sees every change). Raises
        ``TimedOut`` after ``timeout`` seconds. The GIL is released while
        waiting, and Ctrl-C interrupts it."""
        limit = _ms(timeout, "wait_state")
        want = _cint(state, "wait_state")
        name = _state_name(want)
        return _wait_sliced(
            lambda ms, out: lib.bgjob_job_wait_state(self._h, want, ms, out),
            timeout,
            limit,
            self._call,
            "wait_state",
            f"job {self._run.name!r} not {name}",
        )

    async def wait_state_async(self, state: State, timeout: float | None = None) -> State:
        """``await job.wait_state_async(State.READY)``: ``wait_state`` without
        blocking the loop. It looks at the job without waiting, then sleeps on
        the loop between looks (1 ms at first, growing to 20 ms), so a task
        cancelled meanwhile leaves nothing behind."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        pause = 0.001
        out = c_int32()
        while True:
            r = lib.bgjob_job_wait_state(self._h, _cint(state, "wait_state"), 0, byref(out))
            if r == Result.OK:
                return State(out.value)
            if r != Result.TIMED_OUT:
                self._call(r, "wait_state_async")
            if deadline is not None and loop.time() >= deadline:
                raise TimedOut(f"wait_state_async: job {self._run.name!r} not {_state_name(state)} after {timeout} s")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.02)

    def wait(self, timeout: float | None = None) -> State:
        """Waits until the job has ended and returns its final state; raises
        ``TimedOut`` after ``timeout`` seconds (the job runs on). The GIL is
        released while waiting, and Ctrl-C (KeyboardInterrupt) interrupts it."""
        limit = _ms(timeout, "wait")
        self._refuse_unstarted("wait")
        h = self._h
        return _wait_sliced(
            lambda ms, out: lib.bgjob_job_wait(h, ms, out),
            timeout,
            limit,
            self._call,
            "wait",
            f"job {self._run.name!r} still running",
        )

    def progress(self, interval: float = 0.5) -> Iterator[Info]:
        """Yields a snapshot (``Info``) at once and then every ``interval``
        seconds while the job runs, and a last one once it has ended (wakes
        at once then). For a progress bar::

            for info in job.progress(0.2):
                bar.update(info.current - bar.n)   # tqdm: bar = tqdm(total=...)
        """
        _ms(interval, "progress")  # checks it
        while True:
            info = self.info
            yield info
            if info.state.terminal:
                return
            try:
                self.wait(interval)
            except TimedOut:
                pass

    def _refuse_unstarted(self, what: str) -> None:
        if self.state == State.CREATED:
            raise NotAllowed(
                f"{what}: job {self._run.name!r} was not started (it is created): start() it "
                "first, or it would wait forever"
            )

    async def wait_async(self) -> State:
        """``await job.wait_async()``: the final state, without blocking the
        loop or using a thread. The job's completion wakes the waiting task: a
        job created inside the loop is told through the loop's context fd
        (``loop.add_reader``); one told on its own thread wakes the loop with
        ``call_soon_threadsafe``. Any number of tasks may wait."""
        loop = asyncio.get_running_loop()
        ctx = self._context
        if ctx is not None and not self._done:
            ctx._retire_if_loop_gone()
        with self._lock:
            done = self._done
            if not done:
                fut: asyncio.Future[State | None] = loop.create_future()
                self._waiters.append(fut)
        if done:
            return self._final_state()
        self._refuse_unstarted("wait_async")
        try:
            await fut
            return self._final_state()
        finally:
            with self._lock:
                if fut in self._waiters:
                    self._waiters.remove(fut)

    def __await__(self) -> Generator[Any, None, T]:
        """``await job`` is the job's ``result()`` (or its exception) once it
        ended. Cancelling the awaiting task requests cancel of the job (use
        ``asyncio.shield(job)`` to keep it running, or ``wait_async()``, which
        only watches)."""
        return self._await_result().__await__()

    async def result_async(self) -> T:
        """``await job`` as a coroutine, for what wants one:
        ``TaskGroup.create_task(job.result_async())``,
        ``asyncio.create_task(...)`` for ``asyncio.wait`` (or
        ``asyncio.ensure_future(job)``). Cancelling it cancels the job."""
        return await self._await_result()

    async def _await_result(self) -> T:
        try:
            await self.wait_async()
        except asyncio.CancelledError:
            # As asyncio.wrap_future does for a concurrent future: cancelling
            # the task that awaits the job (wait_for, timeout, TaskGroup,
            # task.cancel(), Ctrl-C in asyncio.run) requests cancel of the
            # job. asyncio.shield(job) keeps it running.
            with contextlib.suppress(BgjobError):
                self.cancel()
            raise
        return self.result()

    def close(self) -> None:
        """Releases the job: cancels it if it still runs, waits for it, and
        destroys the handle. Idempotent; afterwards every call raises
        ``InvalidHandle``. Not allowed from the job's own worker."""
        if self._closed:
            return
        if self._run.thread == threading.get_ident():
            raise NotAllowed(f"close: job {self._run.name!r} cannot close itself from its worker")
        st = c_int32()
        r = lib.bgjob_job_get_state(self._h, byref(st))
        if r == Result.INVALID_HANDLE:  # another thread closed it
            self._closed = True
            return
        self._call(r, "close")
        if st.value not in (State.CREATED,) and not State(st.value).terminal:
            self.cancel()
            st.value = self.wait()
        if self._final is None and State(st.value).terminal:
            self._final = State(st.value)
        r = lib.bgjob_job_destroy(self._h)
        if r not in (Result.OK, Result.INVALID_HANDLE):
            self._call(r, "close")
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def ref(self) -> JobHandle:
        """A new reference to this job (``bgjob_job_ref``): a ``JobHandle`` of
        its own, valid until its ``close()`` whatever happens to this Job's
        handle."""
        out = JobPtr()
        self._call(lib.bgjob_job_ref(self._h, byref(out)), "ref")
        return JobHandle(out)

    def __enter__(self) -> Job[T]:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        # Only reached for a job that never started (destroy cancels it) or
        # once its completion has run or been dropped (the Job is held in
        # _keep until then), that is once it has ended.
        try:
            if not self._closed:
                self._closed = True
                if self._final is None:
                    st = c_int32()
                    if lib.bgjob_job_get_state(self._h, byref(st)) == Result.OK and State(st.value).terminal:
                        self._final = State(st.value)
                lib.bgjob_job_destroy(self._h)
            exc = self._run.exception
            if exc is not None and not self._observed and self._final == State.FAILED:
                # asyncio's "Task exception was never retrieved", once.
                self._observed = True
                _logger.error(
                    "bgjob: exception of job %r was never retrieved (call job.result() or "
                    "job.exception(), read job.error, or await the job)",
                    self._run.name,
                    exc_info=(type(exc), exc, exc.__traceback__),
                )
        except BaseException:
            pass

    # -- completion (any thread)
    def _ended(self, state: State | None, run_callback: bool) -> None:
        # state is None for a dropped completion (called from a free
        # function, which must not call bgjob for this job): the state is
        # read later by whoever asks for it (_final_state).
        with self._lock:
            if self._done:
                return
            self._done = True
            if state is not None:
                self._final = state
            waiters, self._waiters = self._waiters, []
            callbacks, self._callbacks = self._callbacks, []
        for fut in waiters:
            _resolve(fut, state)
        _notify_ended()
        if run_callback:
            for fn in callbacks:
                try:
                    fn(self)
                except BaseException as e:
                    _user_error(e)
        elif state is None and callbacks:
            ctx = self._context
            if ctx is not None and ctx._retired and not _shutting_down:
                # Its loop closed before the job ended: no thread of that loop
                # will run on_complete, so a thread of its own does.
                try:
                    threading.Thread(
                        target=self._late_callbacks, args=(callbacks,), name=f"bgjob-complete-{self._run.name}"
                    ).start()
                except RuntimeError:  # the interpreter is shutting down
                    pass
        # Ended: the Job need not outlive its caller's references any more. Left
        # pinned, Job -> _JobRef -> Job would be a cycle that only a later
        # garbage collection frees (and with it the job's handle).
        self._ref.strong = None

    def _late_callbacks(self, callbacks: list[Callable[[Job[T]], Any]]) -> None:
        for fn in callbacks:
            try:
                fn(self)
            except BaseException as e:
                _report(e)

    def _final_state(self) -> State:
        if self._final is None:
            st = c_int32()
            if not self._closed and lib.bgjob_job_get_state(self._h, byref(st)) == Result.OK:
                if State(st.value).terminal:
                    self._final = State(st.value)
                return State(st.value)
            return State.CANCELLED
        return self._final

    def _cancel_at_exit(self) -> None:
        if not self._closed:
            lib.bgjob_job_cancel(self._h, None)

    def _end_at_exit(self) -> None:
        # An external job's owner is Python code, which no longer runs once
        # the interpreter exits: the cancel above told it (its control
        # callable ran inside that call), and a job it did not end then is
        # ended here, cancelled, as its owner's end() would. Waiting for it
        # would wait for ever; leaving it would let a daemon thread's late
        # end() run the completion under a finalizing interpreter.
        if not self._closed and self._run.fn is _no_worker:
            lib.bgjob_job_end(self._h, -errno.ECANCELED, b"the interpreter is exiting")


def _state_name(state: int) -> str:
    return State(state).name if state in State._value2member_map_ else str(int(state))


def _wait_sliced(
    wait: Callable[[int, Any], int],
    timeout: float | None,
    limit: int,
    call: Callable[[int, str], None],
    what: str,
    unmet: str,
) -> State:
    """``wait(ms, byref(state))`` (a bgjob wait call) for ``limit`` ms (from
    ``_ms(timeout)``), cut into slices on the main thread so that Ctrl-C is
    handled between them; ``TimedOut`` says ``unmet``."""
    # A limit too large to represent (inf, 1e300) waits for ever.
    deadline = None if timeout is None or limit >= _I64_MAX else time.monotonic() + limit / 1000.0
    on_main = threading.current_thread() is threading.main_thread()
    state = c_int32()
    while True:
        if deadline is None:
            ms = _SLICE_MS if on_main else -1
        else:
            ms = min(max(0, math.ceil((deadline - time.monotonic()) * 1000)), _I64_MAX)
            if on_main:
                ms = min(ms, _SLICE_MS)
        r = wait(ms, byref(state))
        if r == Result.OK:
            return State(state.value)
        if r != Result.TIMED_OUT:
            call(r, what)
        if deadline is not None and time.monotonic() >= deadline:
            raise TimedOut(f"{what}: {unmet} after {timeout} s")


def _set_state(fut: asyncio.Future[State | None], state: State | None) -> None:
    if not fut.done():
        fut.set_result(state)


def _resolve(fut: asyncio.Future[State | None], state: State | None) -> None:
    loop = fut.get_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        _set_state(fut, state)
    else:
        try:
            loop.call_soon_threadsafe(_set_state, fut, state)
        except RuntimeError:  # that loop is closed: nobody is waiting any more
            pass


# ---------------------------------------------------------------- several jobs

#: ``wait``'s ``return_when``: concurrent.futures' own constants.
FIRST_COMPLETED = concurrent.futures.FIRST_COMPLETED
FIRST_EXCEPTION = concurrent.futures.FIRST_EXCEPTION
ALL_COMPLETED = concurrent.futures.ALL_COMPLETED

# Notified whenever a job's completion has run (or been dropped); _ended_gen
# counts those, so a waiter that saw the count before looking at its jobs
# cannot miss an end that happens between its look and its sleep.
_ended_cond = threading.Condition(threading.Lock())
_ended_gen = 0


def _notify_ended() -> None:
    global _ended_gen
    with _ended_cond:
        _ended_gen += 1
        _ended_cond.notify_all()


class DoneAndNotDone(NamedTuple):
    """What ``bgjob.wait`` returns, as ``concurrent.futures.wait`` does."""

    done: set[Job[Any]]
    not_done: set[Job[Any]]


def _failed(job: Job[Any]) -> bool:
    return job.state == State.FAILED


def _wait_some(pending: set[Job[Any]], deadline: float | None, enough: Callable[[set[Job[Any]]], bool]) -> set[Job[Any]]:
    """Waits until ``enough(ended)`` holds for the jobs of ``pending`` that
    have ended, or ``deadline`` passes; returns those that have ended. A job
    is seen to end by its state (bgjob's own), not by its completion: a job
    whose context nobody dispatches yet still counts. Its completion wakes
    the wait at once; for a job with a context (whose completion may come
    late), the state is also looked at every 50 ms."""
    on_main = threading.current_thread() is threading.main_thread()
    while True:
        with _ended_cond:
            gen = _ended_gen
        ended = {job for job in pending if job.done()}
        if enough(ended):
            return ended
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return ended
        slice_s: float | None = None
        if on_main or any(job._context is not None for job in pending - ended):
            slice_s = _SLICE_MS / 1000.0  # Ctrl-C on the main thread, as in Job.wait
        if deadline is not None:
            left = deadline - now
            slice_s = left if slice_s is None else min(slice_s, left)
        with _ended_cond:
            if _ended_gen == gen:
                _ended_cond.wait(slice_s)


def _started(jobs: Iterable[Job[Any]], what: str) -> set[Job[Any]]:
    js = set(jobs)
    for job in js:
        if not isinstance(job, Job):
            raise TypeError(f"bgjob.{what}: {job!r} is not a bgjob.Job (use concurrent.futures.{what} for futures)")
        job._refuse_unstarted(what)
        if job._run.thread == threading.get_ident():
            # As bgjob_job_wait from a job's own worker: it would wait for itself.
            raise NotAllowed(f"{what}: job {job._run.name!r} cannot wait for itself from its worker")
    return js


def wait(jobs: Iterable[Job[Any]], timeout: float | None = None, return_when: str = ALL_COMPLETED) -> DoneAndNotDone:
    """``concurrent.futures.wait`` for jobs: waits until all of ``jobs`` have
    ended (``return_when=ALL_COMPLETED``), any one (``FIRST_COMPLETED``) or
    any one FAILED (``FIRST_EXCEPTION``; a cancelled job does not count, as
    for futures), at most ``timeout`` seconds, and returns the named tuple
    ``(done, not_done)`` of sets. Never raises on timeout. ``NotAllowed`` for a
    job never started; ``InvalidHandle`` for a closed one."""
    if return_when not in (FIRST_COMPLETED, FIRST_EXCEPTION, ALL_COMPLETED):
        raise InvalidArgument(f"wait: return_when={return_when!r}: use bgjob.FIRST_COMPLETED, FIRST_EXCEPTION or ALL_COMPLETED")
    pending = _started(jobs, "wait")
    deadline = None if timeout is None else time.monotonic() + _ms(timeout, "wait") / 1000.0

    def enough(ended: set[Job[Any]]) -> bool:
        if len(ended) == len(pending):
            return True
        if return_when == FIRST_COMPLETED:
            return bool(ended)
        if return_when == FIRST_EXCEPTION:
            return any(_failed(job) for job in ended)
        return False

    done = _wait_some(pending, deadline, enough)
    return DoneAndNotDone(done, pending - done)


def as_completed(jobs: Iterable[Job[T]], timeout: float | None = None) -> Iterator[Job[T]]:
    """``concurrent.futures.as_completed`` for jobs: yields each of ``jobs``
    (duplicates once) as it ends -- those already ended first -- and raises
    ``TimedOut`` (a ``TimeoutError``) if some have not ended ``timeout``
    seconds after the call. ``NotAllowed`` for a job never started."""
    pending: set[Job[T]] = cast("set[Job[T]]", _started(jobs, "as_completed"))
    total = len(pending)
    deadline = None if timeout is None else time.monotonic() + _ms(timeout, "as_completed") / 1000.0

    def gen() -> Iterator[Job[T]]:
        while pending:
            ended = cast("set[Job[T]]", _wait_some(cast("set[Job[Any]]", pending), deadline, bool))
            if not ended:
                raise TimedOut(f"as_completed: {len(pending)} (of {total}) jobs unfinished after {timeout} s")
            for job in sorted(ended, key=lambda j: j.id):
                pending.discard(job)
                yield job

    return gen()


def current_worker() -> Worker:
    """The ``Worker`` of the job whose worker is running on this thread: what
    a function run by ``Executor.submit`` (which gets no worker argument) uses
    for progress, phase and cancel checks. RuntimeError elsewhere."""
    worker = getattr(_tls, "worker", None)
    if worker is None:
        raise RuntimeError("bgjob.current_worker(): no bgjob worker is running on this thread")
    assert isinstance(worker, Worker)
    return worker


class JobFuture(concurrent.futures.Future[T], Generic[T]):
    """The ``concurrent.futures.Future`` of an ``Executor.submit``, with the
    job behind it as ``job`` (for ``info``, ``pause()``, ``cancel()``...).
    ``cancel()`` keeps its ``concurrent.futures`` meaning (it succeeds only
    while the job waits for a slot under ``set_max_running``); ``job.cancel()``
    asks a running worker to stop."""

    job: Job[T]

    def cancel(self) -> bool:
        if super().cancel():
            # Never ran: the job ends CANCELLED without calling the function.
            with contextlib.suppress(BgjobError):
                self.job.cancel()
            return True
        return False


class Executor(concurrent.futures.Executor):
    """A ``concurrent.futures.Executor`` whose calls are bgjob jobs, each on a
    thread of its own (cap them process-wide with ``set_max_running``).
    ``submit(fn, *args, **kwargs)`` runs ``fn(*args, **kwargs)`` -- no worker
    argument: ``bgjob.current_worker()`` is there for progress and cancel
    checks -- and returns a ``JobFuture``, so ``result(timeout)``,
    ``exception()``, ``add_done_callback``, ``as_completed``, ``wait``,
    ``map`` and ``asyncio.wrap_future`` work as for any executor, and a
    worker's exception is raised as itself by ``result()``.
    ``shutdown(wait=True, cancel_futures=False)`` and ``with`` as usual."""

    def __init__(self, name_prefix: str = "") -> None:
        self._prefix = name_prefix
        self._count = itertools.count()
        self._lock = threading.Lock()
        self._shutdown = False
        self._futures: set[JobFuture[Any]] = set()

    def __repr__(self) -> str:
        state = "shut down" if self._shutdown else "open"
        return f"<bgjob.Executor {self._prefix!r} {state}, {len(self._futures)} running>"

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> JobFuture[T]:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            future: JobFuture[T] = JobFuture()
            name = f"{self._prefix}-{next(self._count)}" if self._prefix else None
            # The work takes the future out of here and lets go of it once it
            # is resolved: the work's frame may be kept after the call (by a
            # traceback of the exception it passed on, held anywhere), and
            # the future holds the Job, whose handle is destroyed only when
            # the Job is collected.
            slot = [future]

            def work(w: Worker) -> T:
                fut = slot.pop()
                if not fut.set_running_or_notify_cancel():
                    del fut
                    raise Cancelled("the future was cancelled before the job ran")
                try:
                    value = fn(*args, **kwargs)
                except BaseException as e:
                    fut.set_exception(e)
                    del fut
                    raise
                fut.set_result(value)
                del fut
                return value

            # Completion on the job's thread, as ThreadPoolExecutor sets its
            # futures on its threads (not through a loop's context).
            job = Job(work, name=name, start=False, context=_NO_CONTEXT)
            job._observed = True  # the future carries the outcome
            future.job = job
            self._futures.add(future)
            future.add_done_callback(self._futures.discard)
        try:
            job.start()
        except NotAllowed:
            # cancel_all or the exit hook cancelled the job before its start:
            # the future is cancelled too, never run (as a cancel_futures
            # shutdown leaves one), not left pending for ever.
            if not job._cancelled_before_start():
                raise
            slot.clear()
            future.cancel()
            future.set_running_or_notify_cancel()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            futures = list(self._futures)
        if cancel_futures:
            for f in futures:
                f.cancel()
        if wait:
            for f in futures:
                if not f.cancelled():
                    f.job.wait()


def start(fn: Callable[..., T], *args: Any, **options: Any) -> Job[T]:
    """Starts ``fn(worker, *args, **kwargs)`` as a background job; the
    options (``kwargs=``, ``name=``, ...) are ``Job``'s."""
    options["start"] = True
    return Job(fn, *args, **options)


# ---------------------------------------------------------------- transactions


class Transaction:
    """A group of jobs that succeed or fail together (QEMU's JobTxn): when one
    fails or is cancelled, the others are cancelled; when all are done, each
    member's ``on_commit`` runs if all succeeded, else its ``on_abort``; then
    each one's ``on_clean``; then they end. Members are made with
    ``start=False`` and added before ``start()``."""

    def __init__(self, manual_finalize: bool = False):
        self._closed = True
        handle = TxnPtr()
        flags = _ffi.TXN_MANUAL_FINALIZE if manual_finalize else 0
        check(lib.bgjob_txn_create(flags, byref(handle)), "txn_create")
        self._h = handle
        self._closed = False
        self.jobs: list[Job[Any]] = []

    def _handle(self, what: str) -> Any:
        if self._closed:
            raise InvalidHandle(f"{what}: the transaction is closed")
        return self._h

    def add(self, job: Job[T]) -> Job[T]:
        """Adds a job that has not started; returns it."""
        check(lib.bgjob_txn_add(self._handle("txn_add"), job._h), "txn_add")
        self.jobs.append(job)
        return job

    def start(self) -> None:
        """Starts every member."""
        handle = self._handle("txn_start")
        for job in self.jobs:
            job._pin()
        r = lib.bgjob_txn_start(handle)
        if r != Result.OK:
            for job in self.jobs:
                job._unpin()
        check(r, "txn_start")

    def cancel(self) -> None:
        """Cancels every member; returns at once."""
        check(lib.bgjob_txn_cancel(self._handle("txn_cancel")), "txn_cancel")

    def finalize(self) -> None:
        """Finalizes a ``manual_finalize`` transaction (now, or as soon as the
        last member is done)."""
        check(lib.bgjob_txn_finalize(self._handle("txn_finalize")), "txn_finalize")

    def close(self) -> None:
        """Drops this handle (the members settle as they would have). Idempotent."""
        if not self._closed:
            self._closed = True
            lib.bgjob_txn_destroy(self._h)

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except BaseException:
            pass


# ---------------------------------------------------------------- contexts

_contexts: weakref.WeakSet[Context] = weakref.WeakSet()
_loop_contexts: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Context] = (
    weakref.WeakKeyDictionary()
)
_loop_contexts_lock = threading.Lock()


class Context:
    """Completion on your thread: jobs created with ``context=ctx`` run their
    ``on_complete`` on the thread that calls ``ctx.dispatch()``. ``fileno()``
    is readable while completions are queued, so it plugs into ``select``,
    ``selectors`` or ``asyncio`` (``attach(loop)``). An exception raised by a
    callback is raised again by the ``dispatch`` that ran it."""

    def __init__(self) -> None:
        self._closed = True
        handle = ContextPtr()
        check(lib.bgjob_context_create(byref(handle)), "context_create")
        self._h = handle
        self._closed = False
        fd = c_int32()
        check(lib.bgjob_context_get_fd(handle, byref(fd)), "context_get_fd")
        self._fd = fd.value
        self._loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
        # A loop's own context (loop_context) is retired when its loop ends.
        self._retired = False
        self._of_loop = False
        #: How many completions this context has run in all.
        self.dispatched = 0
        _contexts.add(self)

    def _handle(self, what: str) -> Any:
        if self._closed:
            raise InvalidHandle(f"{what}: the context is closed")
        return self._h

    def __repr__(self) -> str:
        if self._closed:
            return f"<bgjob.Context closed, dispatched={self.dispatched}>"
        loop = self._loop() if self._loop is not None else None
        where = f" attached to {type(loop).__name__}" if loop is not None else ""
        try:
            pending = f" pending={self.pending}"
        except BgjobError:
            pending = ""
        return f"<bgjob.Context fd={self._fd}{pending} dispatched={self.dispatched}{where}>"

    def fileno(self) -> int:
        """The pollable fd (readable while completions are queued). Poll it; do
        not read, write or close it."""
        self._handle("fileno")
        return self._fd

    def dispatch(self, max: int = 0) -> int:
        """Runs queued completions here (at most ``max``; 0: all queued now) and
        returns how many ran."""
        handle = self._handle("dispatch")
        limit = _cint(max, "dispatch", 0, (1 << (8 * sizeof(c_size_t))) - 1)
        ran = c_size_t()
        errors: list[BaseException] = []
        outer = getattr(_tls, "errors", None)
        _tls.errors = errors
        try:
            r = lib.bgjob_context_dispatch(handle, limit, byref(ran))
        finally:
            _tls.errors = outer
        check(r, "dispatch")
        self.dispatched += ran.value
        if len(errors) == 1:
            raise errors[0]
        if errors:
            fatal = [e for e in errors if not isinstance(e, Exception)]
            if fatal:
                # KeyboardInterrupt or SystemExit goes first, as itself (an
                # ExceptionGroup holds Exceptions only); the others are reported.
                for e in errors:
                    if e is not fatal[0]:
                        _report(e)
                raise fatal[0]
            raise CallbackErrors(
                f"bgjob: {len(errors)} completion callbacks raised", [e for e in errors if isinstance(e, Exception)]
            )
        return ran.value

    @property
    def pending(self) -> int:
        """Completions queued now."""
        n = c_size_t()
        check(lib.bgjob_context_pending(self._handle("pending"), byref(n)), "pending")
        return n.value

    def attach(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Dispatches on ``loop`` (default: the running one) whenever the fd is
        readable (``loop.add_reader``)."""
        loop = loop or asyncio.get_running_loop()
        self.detach()
        loop.add_reader(self.fileno(), self._readable)
        self._loop = weakref.ref(loop)

    def detach(self) -> None:
        """Stops dispatching on the loop given to ``attach``."""
        loop = self._loop() if self._loop is not None else None
        self._loop = None
        if loop is not None and not loop.is_closed():
            loop.remove_reader(self._fd)

    def _readable(self) -> None:
        if not self._closed:
            self.dispatch()

    def _retire(self) -> None:
        """The loop this (loop_context) context served has ended or is ending.
        What is queued runs now if we are on that loop; the context is then
        destroyed, so the completion of a job still bound to it is dropped
        when the job ends: that job is still awaitable in any loop, its
        on_complete runs on a thread of its own, and it is freed when dropped."""
        if self._closed or self._retired:
            return
        self._retired = True
        loop = self._loop() if self._loop is not None else None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is not None and running is loop:
            try:
                self.dispatch()
            except BaseException as e:
                for err in e.exceptions if isinstance(e, CallbackErrors) else (e,):
                    _report(err)
        self.close()

    def _retire_if_loop_gone(self) -> None:
        if not self._of_loop or self._closed:
            return  # not a loop's own context, or already gone
        loop = self._loop() if self._loop is not None else None
        if loop is None or loop.is_closed():
            self._retire()

    def _forget(self) -> None:
        # In a forked child: the handle is the parent's (invalid here).
        self._closed = True
        self._loop = None

    def close(self) -> None:
        """Detaches and destroys the context; completions still queued, and
        those of jobs still bound to it, are dropped unrun (the jobs'
        ``wait_async`` still returns). Idempotent."""
        if self._closed:
            return
        self.detach()
        self._closed = True
        lib.bgjob_context_destroy(self._h)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except BaseException:
            pass


def loop_context(loop: asyncio.AbstractEventLoop | None = None) -> Context:
    """The context that jobs created inside ``loop`` (default: the running
    loop) use, attached to it with ``add_reader``; made on first use."""
    loop = loop or asyncio.get_running_loop()
    with _loop_contexts_lock:
        ctx = _loop_contexts.get(loop)
        if ctx is None or ctx.closed:
            ctx = Context()
            ctx.attach(loop)
            _watch_loop(ctx, loop)
            _loop_contexts[loop] = ctx
    return ctx


def _watch_loop(ctx: Context, loop: asyncio.AbstractEventLoop) -> None:
    """Retires ``ctx`` when ``loop`` ends: at its ``shutdown_asyncgens()``
    (asyncio.run and asyncio.Runner call it before closing the loop; it closes
    every async generator that ran in the loop, this one too), or when the loop
    is collected. A loop closed by hand and kept is found out by the next
    ``wait_async`` of a job bound to it."""
    ref = weakref.ref(ctx)

    async def watch() -> Any:
        try:
            yield
        finally:
            c = ref()
            if c is not None:
                c._retire()

    agen = watch()
    ctx._of_loop = True
    # The generator refers to the loop (its finalizer hook), so it is kept on
    # the loop, not on the context: loop and generator are then collected
    # together. A loop type without attributes keeps it on the context (the
    # loop then lives as long as the context).
    try:
        loop._bgjob_watch = agen  # type: ignore[attr-defined]
    except AttributeError:
        ctx._keep_watch = agen  # type: ignore[attr-defined]
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        # Its first step registers it with the loop (the firstiter hook).
        try:
            agen.asend(None).send(None)
        except StopIteration:
            pass
    fin = weakref.finalize(loop, _retire_ref, ref)
    fin.atexit = False


def _retire_ref(ref: weakref.ref[Context]) -> None:
    ctx = ref()
    if ctx is not None:
        ctx._retire()


# ---------------------------------------------------------------- library


def version() -> str:
    """The loaded library's version, e.g. "0.1.0"."""
    text: bytes = lib.bgjob_version()
    return text.decode()


def abi_version() -> int:
    """The loaded library's ABI version (the number in its SONAME)."""
    return int(lib.bgjob_abi_version())


def verb_allowed(verb: Verb | int, state: State | int) -> bool:
    """Whether ``verb`` may be applied to a job in ``state`` (bgjob's table)."""
    allowed = c_bool()
    check(lib.bgjob_verb_allowed(_cint(verb, "verb_allowed"), _cint(state, "verb_allowed"), byref(allowed)), "verb_allowed")
    return allowed.value


class JobHandle:
    """A shared reference to a job (``Job.ref()``, ``lookup(id)``): reads it,
    cancels, pauses, resumes and waits for it, and can be a ``parent=``. It
    owns no worker, result or callback: those stay with the job's creator.
    ``close()`` releases this reference only; if it was the job's last handle
    and the job still runs, the job is detached (it frees itself when it
    ends). Use it in ``with``."""

    def __init__(self, handle: Any):
        self._h = handle
        self._closed = False
        id_ = c_uint64()
        check(lib.bgjob_job_get_id(handle, byref(id_)), "get_id")
        self.id = id_.value

    def __repr__(self) -> str:
        return f"<bgjob.JobHandle {self.id}{' closed' if self._closed else ''}>"

    def _call(self, r: int, what: str) -> None:
        if r != Result.OK:
            if r == Result.INVALID_HANDLE and self._closed:
                raise InvalidHandle(f"{what}: job handle {self.id} is closed")
            raise error_for(r, what)

    @property
    def state(self) -> State:
        st = c_int32()
        self._call(lib.bgjob_job_get_state(self._h, byref(st)), "state")
        return State(st.value)

    @property
    def info(self) -> Info:
        c = _ffi.bgjob_info(struct_size=sizeof(_ffi.bgjob_info))
        self._call(lib.bgjob_job_get_info(self._h, byref(c)), "info")
        return Info._from_c(c, _text(lib.bgjob_job_get_phase, self._h, "info"))

    def cancel(self) -> CancelStatus:
        status = c_int32()
        self._call(lib.bgjob_job_cancel(self._h, byref(status)), "cancel")
        return CancelStatus(status.value)

    def pause(self) -> None:
        self._call(lib.bgjob_job_pause(self._h), "pause")

    def resume(self) -> None:
        self._call(lib.bgjob_job_resume(self._h), "resume")

    def wait(self, timeout: float | None = None) -> State:
        """Waits until the job has ended (``TimedOut`` after ``timeout``
        seconds); the GIL is released while waiting."""
        limit = _ms(timeout, "wait")
        h = self._h
        return _wait_sliced(
            lambda ms, out: lib.bgjob_job_wait(h, ms, out), timeout, limit, self._call, "wait", "the job still running"
        )

    def ref(self) -> JobHandle:
        out = JobPtr()
        self._call(lib.bgjob_job_ref(self._h, byref(out)), "ref")
        return JobHandle(out)

    def close(self) -> None:
        """Releases this reference (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if lib.bgjob_job_destroy(self._h) == Result.NOT_ALLOWED:
            # The last handle of a job that still runs: it runs on by itself.
            lib.bgjob_job_detach(self._h, 0)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> JobHandle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except BaseException:
            pass


def lookup(job_id: int) -> JobHandle:
    """A new reference to the live job with this id (``bgjob_job_lookup``);
    ``InvalidArgument`` if there is none."""
    out = JobPtr()
    check(lib.bgjob_job_lookup(_u64(job_id, "lookup"), byref(out)), "lookup")
    return JobHandle(out)


def list_jobs() -> list[JobEntry]:
    """Every job that exists now (C and Python ones), in id order."""
    capacity = 16
    while True:
        entries = (_ffi.bgjob_job_entry * capacity)()
        count = c_size_t()
        check(lib.bgjob_list_jobs(entries, capacity, byref(count)), "list_jobs")
        if count.value <= capacity:
            return [
                JobEntry(
                    id=e.id,
                    state=State(e.state),
                    name=e.name.decode("utf-8", "replace"),
                    phase=e.phase.decode("utf-8", "replace"),
                    age=e.age_ms / 1000.0,
                    since_progress=_seconds(e.since_progress_ms),
                    operation=e.operation.decode("utf-8", "replace"),
                    owner=e.owner.decode("utf-8", "replace"),
                    pause_count=e.pause_count,
                    cancel_requested=bool(e.cancel_requested),
                    cancel_cause=CancelCause(e.cancel_cause),
                    parent_id=e.parent_id,
                )
                for e in entries[: count.value]
            ]
        capacity = count.value + 16


@dataclasses.dataclass(frozen=True)
class PoolStatus:
    """The process-wide pool (``pool_status()``): the cap (0: none), the job
    workers running now, and the started jobs queued for a slot."""

    max_running: int
    running: int
    queued: int


def set_max_running(n: int) -> None:
    """Caps how many job workers run at once, process-wide (0 removes the
    cap); jobs started beyond it queue, first in first out, showing RUNNING."""
    if not 0 <= int(n) < 1 << 32:
        raise InvalidArgument(f"set_max_running: {n} is not in 0..2**32-1")
    check(lib.bgjob_pool_set_max_running(int(n)), "set_max_running")


def pool_status() -> PoolStatus:
    """A snapshot of the pool: cap, running workers, queued jobs."""
    cap, running, queued = ctypes.c_uint32(), c_size_t(), c_size_t()
    check(lib.bgjob_pool_get_status(byref(cap), byref(running), byref(queued)), "pool_status")
    return PoolStatus(cap.value, running.value, queued.value)


def set_log_callback(fn: Callable[[str], Any] | None) -> None:
    """Sends bgjob's lifecycle log lines to ``fn(line)`` (any thread), or
    stops with None (then ``BGJOB_DEBUG=1`` sends them to stderr)."""
    if fn is None:
        check(lib.bgjob_set_log_callback(_NO_LOG, None, _NO_FREE), "set_log_callback")
        return
    if not callable(fn):
        raise TypeError(f"set_log_callback: expected a callable or None, not {type(fn).__name__}")
    if _shutting_down:
        raise RuntimeError("bgjob: the interpreter is shutting down; no new log callback")
    key = _hold(fn, tracked=True)
    check(lib.bgjob_set_log_callback(_log_cb, key, _free_cb), "set_log_callback")


def _live_jobs() -> list[Job[Any]]:
    """Every Job made (started or not) whose completion has not run yet."""
    jobs = []
    for obj, _ in list(_keep.values()):
        job = obj.get() if isinstance(obj, _JobRef) else None
        if job is not None and not job._closed:
            jobs.append(job)
    return jobs


def _running(job: Job[Any]) -> bool:
    st = c_int32()
    return (
        not job._closed
        and lib.bgjob_job_get_state(job._h, byref(st)) == Result.OK
        and not State(st.value).terminal
    )


def cancel_all(timeout: float | None = None) -> list[Job[Any]]:
    """Cancels every job made from Python that has not ended and waits for
    them to end, at most ``timeout`` seconds in all (None: as long as it
    takes). One made with ``start=False`` and not started yet ends CANCELLED
    at once, its worker never run (a later ``start()`` is ``NotAllowed``, as
    is a ``Transaction.start()`` with it as a member). Returns the jobs still
    running then -- those whose workers do not check for cancel -- which is
    empty when all ended. A bounded version of what happens at interpreter
    exit (see ``set_exit_timeout``)."""
    deadline = None if timeout is None else time.monotonic() + _ms(timeout, "cancel_all") / 1000.0
    jobs = [job for job in _live_jobs() if _running(job)]
    for job in jobs:
        with contextlib.suppress(BgjobError):
            job.cancel()
    me = threading.get_ident()
    left = []
    for job in jobs:
        if job._run.thread == me:
            continue  # called from this job's worker: it cannot wait for itself
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            job.wait(remaining)
        except TimedOut:
            left.append(job)
        except InvalidHandle:
            pass
    return left


def set_exit_timeout(seconds: float | None) -> None:
    """Bounds the wait at interpreter exit. At exit bgjob cancels every live
    job and waits for its worker to return, as ``concurrent.futures``'
    ThreadPoolExecutor waits for its threads: a worker that never checks for
    cancel keeps the process alive as long as it runs. With ``seconds`` set,
    once they have passed bgjob names the jobs still running on stderr and
    ends the process at once with status 1 (``os._exit``: later at-exit work is
    skipped; letting the interpreter finalize under a running worker would
    crash it). The bound covers the whole of bgjob's exit work, a cancel
    that blocks in C included: a daemon thread of bgjob's
    (``bgjob-exit-watchdog``, started here) ends the process then. None (the
    default) waits as long as it takes."""
    global _exit_timeout
    if seconds is not None:
        _ms(seconds, "set_exit_timeout")  # checks it
    _exit_timeout = None if seconds is None else float(seconds)
    if seconds is not None and not _shutting_down:
        _start_exit_watchdog()


# The exit watchdog: a daemon thread started by set_exit_timeout (threads
# cannot be started in an at-exit hook on 3.12+), parked until the hook
# begins, then ending the process if the hook is not done by the deadline --
# the hook's own loop does the same, but cannot run while a call into C
# blocks (an external job's end waits for a control call on another thread).
_exit_began = threading.Event()
_exit_done = threading.Event()
_exit_deadline: float | None = None
_watchdog: threading.Thread | None = None


def _start_exit_watchdog() -> None:
    global _watchdog
    if _watchdog is not None and _watchdog.is_alive():
        return
    _watchdog = threading.Thread(target=_exit_watchdog, name="bgjob-exit-watchdog", daemon=True)
    _watchdog.start()


def _exit_watchdog() -> None:
    _exit_began.wait()
    while not _exit_done.is_set():
        timeout, deadline = _exit_timeout, _exit_deadline
        if timeout is None or deadline is None:
            return
        left = deadline - time.monotonic()
        if left <= 0:
            _exit_timed_out(timeout)
        _exit_done.wait(left)


def _exit_timed_out(timeout: float) -> None:
    stuck = [job for job in _live_jobs() if _running(job)]
    names = ", ".join(repr(job._run.name) for job in stuck) or "(none listed)"
    _exit_now(
        f"bgjob: exit timeout ({timeout:g} s) expired with {len(stuck)} job(s) still running "
        f"(their workers do not check for cancel): {names}; ending the process\n"
    )
    os._exit(1)


@atexit.register
def _at_exit() -> None:
    """Interpreter shutdown: no new jobs; cancel every live one; drop the log
    callback and close contexts (their queued completions are dropped); then
    wait until no bgjob thread can call Python any more (at most the exit
    timeout, if one was set)."""
    global _shutting_down, _exit_deadline
    _shutting_down = True
    timeout = _exit_timeout
    deadline = None if timeout is None else time.monotonic() + timeout
    _exit_deadline = deadline
    if timeout is not None:
        # Set in a forked child, say, where the parent's watchdog is gone (a
        # thread cannot be started here on 3.12+: the loop below still
        # bounds the wait whenever it can run).
        with contextlib.suppress(RuntimeError):
            _start_exit_watchdog()
    _exit_began.set()
    try:
        stopped: set[int] = set()
        while True:
            _stop_at_exit(stopped)
            while _tracked:
                if deadline is not None and time.monotonic() >= deadline:
                    assert timeout is not None
                    _exit_timed_out(timeout)
                time.sleep(0.002)
                # A job another thread was starting as the exit began (past
                # the shutting-down check) is stopped as the others were.
                _stop_at_exit(stopped)
            # A bgjob thread whose last free just emptied the table may have
            # handed the GIL over before it is back in C (3.9 and 3.10 look
            # for a GIL request after every instruction): sleeping gives it
            # the GIL to get there, and the table is looked at once more.
            time.sleep(0.005)
            if not _tracked:
                break
    except KeyboardInterrupt:
        # Ctrl-C while workers still run: finalizing the interpreter under
        # them would abort the process when one next enters Python (a
        # thread taking the GIL then is ended with pthread_exit, which cannot
        # unwind through bgjob's frames). End it as Ctrl-C would have, at once.
        if _tracked:
            _exit_interrupted()
    except BaseException as e:
        # A SystemExit from a signal handler (SIGTERM -> sys.exit), or
        # anything else: the same, with the status sys.exit gives it.
        if not _tracked:
            raise
        stuck = [job for job in _live_jobs() if _running(job)]
        names = ", ".join(repr(job._run.name) for job in stuck) or "(none listed)"
        code = e.code if isinstance(e, SystemExit) else 1
        text = "" if code is None or isinstance(code, int) else f"{code}\n"
        _exit_now(
            f"{text}bgjob: {type(e).__name__} while waiting at exit for {len(stuck)} job(s) still "
            f"running: {names}; ending the process\n"
        )
        status = 0 if code is None else code & 0xFF if isinstance(code, int) else 1
        os._exit(status)
    finally:
        _exit_done.set()


def _stop_at_exit(stopped: set[int]) -> None:
    """Cancels every live job not stopped yet, then ends those that are
    external (see ``Job._end_at_exit``); drops the log callback (again: one
    may have been set since) and closes the contexts."""
    lib.bgjob_set_log_callback(_NO_LOG, None, _NO_FREE)
    # By object: a Job another thread is making may not have its id yet.
    live = [job for job in _live_jobs() if id(job) not in stopped]
    for job in live:
        stopped.add(id(job))
        job._cancel_at_exit()
    for job in live:
        job._end_at_exit()
    for ctx in list(_contexts):
        ctx.close()


def _exit_interrupted() -> None:
    stuck = [job for job in _live_jobs() if _running(job)]
    names = ", ".join(repr(job._run.name) for job in stuck) or "(none listed)"
    _exit_now(
        f"bgjob: interrupted while waiting at exit for {len(stuck)} job(s) still running: {names}; "
        "ending the process\n"
    )
    # As CPython ends on an uncaught KeyboardInterrupt: killed by SIGINT.
    with contextlib.suppress(BaseException):
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(128 + signal.SIGINT)


def _exit_now(message: str) -> None:
    """Flushes the standard streams and writes ``message`` to fd 2, bypassing
    anything the interpreter's teardown may have closed."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            stream.flush()
    with contextlib.suppress(BaseException):
        os.write(2, message.encode())


os.register_at_fork(after_in_child=_after_fork_in_child)


__all__ = [
    "ALL_COMPLETED",
    "DoneAndNotDone",
    "EXCEPTION_CODE",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "as_completed",
    "wait",
    "Executor",
    "JobFuture",
    "current_worker",
    "cancel_all",
    "set_exit_timeout",
    "Context",
    "ErrorInfo",
    "Info",
    "Job",
    "JobEntry",
    "PoolStatus",
    "Transaction",
    "Worker",
    "abi_version",
    "list_jobs",
    "loop_context",
    "pool_status",
    "set_log_callback",
    "set_max_running",
    "start",
    "verb_allowed",
    "version",
]
