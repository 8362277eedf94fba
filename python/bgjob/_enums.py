"""The C enums as Python IntEnums.

Generated from include/bgjob.h by scripts/gen_py_enums.py: do not edit by
hand; run ``make py-enums`` after the header changes (``make check-py-enums``
fails while this file and the header disagree).
"""

from __future__ import annotations

import enum


class _Quiet(enum.EnumMeta):
    """Leaves int's own methods (bit_length, to_bytes, ...) out of ``dir()``,
    so ``help(bgjob)`` shows each enum's members and methods, not 300 lines of
    int per enum. They all still work: these are ints."""

    def __dir__(cls) -> list[str]:
        own = {n for k in cls.__mro__ if k not in (int, object) for n in vars(k)}
        return sorted(n for n in super().__dir__() if n in own or n in cls._member_map_)


class _Named(enum.IntEnum, metaclass=_Quiet):
    """An IntEnum that prints as its name in lower case (``str``, f-strings),
    as ``State`` always did; ``repr`` keeps the class and the number."""

    def __str__(self) -> str:
        return self.name.lower()

    def __format__(self, spec: str) -> str:
        # f"{x}" and f"{x:>10}" format the name (3.11+ IntEnum would give the number).
        return format(str(self), spec)


class Result(_Named):
    """``bgjob_result``: what every C call returns; 0 is success."""

    OK = 0
    INVALID_HANDLE = 1
    INVALID_ARGUMENT = 2
    NOT_ALLOWED = 3
    TRY_AGAIN = 4
    TIMED_OUT = 5
    CANCELLED = 6
    PANIC = 7
    NOT_FOUND = 8
    SYSTEM = 9


class State(_Named):
    """``bgjob_state``. COMPLETED, FAILED and CANCELLED are terminal."""

    CREATED = 0
    RUNNING = 1
    PAUSED = 2
    WAITING = 3
    COMPLETED = 4
    FAILED = 5
    CANCELLED = 6
    READY = 7
    STANDBY = 8
    PENDING = 9
    ABORTING = 10

    @property
    def terminal(self) -> bool:
        return self in (State.COMPLETED, State.FAILED, State.CANCELLED)


class Control(_Named):
    """``bgjob_control``: what a job's ``control`` callable is told (a verb took effect)."""

    CANCEL = 0
    PAUSE = 1
    RESUME = 2
    COMPLETE = 3
    SET_SPEED = 4
    FINALIZE = 5


class EventKind(_Named):
    """``bgjob_event_kind``: what an ``Event`` reports (``Job(on_event=...)``)."""

    STATE_CHANGED = 0
    IO_ERROR = 1
    READY = 2
    END = 3
    CONTROL_FAILED = 4


class ErrorAction(_Named):
    """``bgjob_error_action``: what ``Worker.report_io_error`` tells the worker."""

    REPORT = 0
    IGNORE = 1
    STOP = 2


class JobType(_Named):
    """``bgjob_job_type``: bounded jobs have a total, unbounded ones do not."""

    BOUNDED = 0
    UNBOUNDED = 1


class CancelCause(_Named):
    """``bgjob_cancel_cause``: why cancel was requested (``Info.cancel_cause``)."""

    NONE = 0
    CALLER = 1
    TIMEOUT = 2
    TRANSACTION = 3
    PARENT = 4


class IoStatus(_Named):
    """``bgjob_iostatus``: not OK only while paused by the error policy."""

    OK = 0
    FAILED = 1
    NOSPACE = 2


class ErrorPolicy(_Named):
    """``bgjob_error_policy``: what an I/O error reported by the worker does."""

    REPORT = 0
    IGNORE = 1
    STOP = 2
    ENOSPC = 3


class CancelStatus(_Named):
    """``bgjob_cancel_status``: which race ``Job.cancel()`` met."""

    REQUESTED = 0
    ALREADY_REQUESTED = 1
    ALREADY_FINISHED = 2

    def __bool__(self) -> bool:
        """True when cancel is requested (now or before): ``if job.cancel():``.
        False when the job had already finished."""
        return self != CancelStatus.ALREADY_FINISHED


class StatType(_Named):
    """``bgjob_stat_type``: the type of a job statistic (``Job.add_stat``)."""

    U64 = 0
    I64 = 1
    DOUBLE = 2
    STRING = 3


class Verb(_Named):
    """``bgjob_verb``: the rows of the verb x state table (``verb_allowed``)."""

    START = 0
    CANCEL = 1
    PAUSE = 2
    RESUME = 3
    DESTROY = 4
    DETACH = 5
    UPDATE = 6
    RESULT = 7
    DRAIN = 8
    FINALIZE = 9
    COMPLETE = 10
