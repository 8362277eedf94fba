"""Result codes as exceptions: one base class, one subclass per code a caller handles."""

from __future__ import annotations

import concurrent.futures
import ctypes
import os
import sys
from typing import Sequence

from ._enums import Result
from ._ffi import lib


class BgjobError(Exception):
    """Base of every bgjob error. ``code`` is the ``Result`` the C call returned."""

    #: A ``Result``, or the raw number for a code this binding does not know.
    code: Result | int | None = None

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        if code is not None:
            self.code = Result(code) if code in Result._value2member_map_ else code


class InvalidHandle(BgjobError):
    """The job or context is closed (destroyed), or never was valid."""

    code = Result.INVALID_HANDLE


class InvalidArgument(BgjobError, ValueError):
    """A value out of range (progress going backwards, a bad percent...)."""

    code = Result.INVALID_ARGUMENT


class NotAllowed(BgjobError):
    """The verb is not allowed in the job's state (pause twice, result while running)."""

    code = Result.NOT_ALLOWED


class TryAgain(BgjobError):
    """No thread could be started (EAGAIN); nothing was left behind."""

    code = Result.TRY_AGAIN


if sys.version_info >= (3, 11):
    _TimeoutBases: tuple[type[Exception], ...] = (TimeoutError,)
else:
    # Before 3.11 concurrent.futures.TimeoutError is a class of its own.
    _TimeoutBases = (TimeoutError, concurrent.futures.TimeoutError)


class TimedOut(BgjobError, *_TimeoutBases):  # type: ignore[misc]
    """``wait(timeout)``, ``result(timeout)``, ``exception(timeout)`` or
    ``as_completed(timeout=)`` ran out of time; the job runs on. A
    ``TimeoutError`` (and a ``concurrent.futures.TimeoutError``, the same
    class from 3.11)."""

    code = Result.TIMED_OUT


class NotFound(BgjobError, LookupError):
    """No such item (a cancel hook that already ran)."""

    code = Result.NOT_FOUND


class InternalError(BgjobError):
    """bgjob hit an internal error (a Rust panic caught at the C boundary)."""

    code = Result.PANIC


class SystemCallFailed(BgjobError, OSError):
    """An operating-system call inside bgjob failed (starting a child, polling);
    ``errno`` says why, as for any ``OSError``."""

    code = Result.SYSTEM

    def __init__(self, message: str, err: int = 0):
        OSError.__init__(self, err, f"{message}: {os.strerror(err)}" if err else message)


class JobError(BgjobError):
    """A job that did not complete: ``error_code`` and ``message`` are the job's own
    error (``Job.error``). ``Job.result()`` raises a worker's ``Exception`` as
    itself; a ``JobFailed`` stands for a failure with none (then ``__cause__``
    is the worker's ``SystemExit`` or other ``BaseException``, if any)."""

    def __init__(self, message: str, error_code: int = 0, job_name: str | None = None):
        super().__init__(message)
        self.error_code = error_code
        self.message = message
        self.job_name = job_name

    def __str__(self) -> str:
        if self.job_name is None:
            return self.message
        return f"job {self.job_name!r} {self._verb} (code {self.error_code}): {self.message}"

    _verb = "ended"


class Cancelled(JobError, concurrent.futures.CancelledError):
    """The job was cancelled. Raised inside a worker by ``check_cancel``,
    ``pause_point`` and ``sleep`` (let it propagate: the job then ends CANCELLED),
    and by ``Job.result()``, ``Job.exception()`` and ``await job`` for a
    cancelled job.

    A ``concurrent.futures.CancelledError`` (so an ``Exception``), not an
    ``asyncio.CancelledError`` (a ``BaseException``): a job is a future, not a
    task, and bgjob's cancel is cooperative -- the worker is asked, and cleans
    up with ordinary ``except``/``finally`` as the demo does. Code awaiting a job
    still sees ``asyncio.CancelledError`` when its own task is cancelled."""

    code = Result.CANCELLED
    _verb = "was cancelled"

    def __init__(self, message: str = "cancelled", error_code: int = 0, job_name: str | None = None):
        super().__init__(message, error_code, job_name)


class DeadlineExceeded(Cancelled, TimeoutError):
    """``Job.result()`` of a job cancelled by its own deadline (``deadline=``,
    ``set_deadline``): a ``Cancelled`` and a ``TimeoutError``."""

    _verb = "ran out of time"


class JobFailed(JobError):
    """``Job.result()`` of a FAILED job that no Python ``Exception`` ended (a
    worker's own exception is raised as itself), with its error code and
    message."""

    _verb = "failed"


if sys.version_info >= (3, 11):
    _Group = ExceptionGroup  # noqa: F821 (a builtin from 3.11)
else:

    class _Group(Exception):
        """What ``ExceptionGroup`` gives, for 3.9 and 3.10: the message and
        the exceptions, each with its own traceback."""

        def __init__(self, message: str, exceptions: Sequence[Exception]):
            super().__init__(message, tuple(exceptions))
            self.message = message
            self.exceptions = tuple(exceptions)

        def __str__(self) -> str:
            n = len(self.exceptions)
            return f"{self.message} ({n} sub-exception{'s' if n != 1 else ''})"


class CallbackErrors(_Group):
    """Raised by ``Context.dispatch`` when more than one completion callback
    raised: ``exceptions`` holds each of them, in the order they ran. An
    ``ExceptionGroup`` on Python 3.11+ (so ``except*`` works); on 3.9 and 3.10
    an ``Exception`` with the same ``message`` and ``exceptions``. A single
    exception is raised as itself."""


_BY_CODE: dict[int, type[BgjobError]] = {
    Result.INVALID_HANDLE: InvalidHandle,
    Result.INVALID_ARGUMENT: InvalidArgument,
    Result.NOT_ALLOWED: NotAllowed,
    Result.TRY_AGAIN: TryAgain,
    Result.TIMED_OUT: TimedOut,
    Result.NOT_FOUND: NotFound,
    Result.PANIC: InternalError,
}


def result_str(code: int) -> str:
    """The library's static text for a result code (any int: one C does not
    know, or past 32 bits, reads as unknown rather than as its low bits)."""
    code = int(code)
    if not -(1 << 31) <= code < 1 << 31:
        return "unknown result"
    text: bytes = lib.bgjob_result_str(code)
    return text.decode()


def error_for(code: int, what: str) -> BgjobError:
    """The exception for a failing result code of the call ``what``."""
    text = f"{what}: {result_str(code)}"
    if code == Result.CANCELLED:
        return Cancelled(text)
    if code == Result.SYSTEM:
        return SystemCallFailed(text, ctypes.get_errno())
    cls = _BY_CODE.get(code, BgjobError)
    return cls(text, code)


def check(code: int, what: str) -> None:
    """Raises the matching exception unless ``code`` is OK."""
    if code != Result.OK:
        raise error_for(code, what)
