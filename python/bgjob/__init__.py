"""bgjob for Python: background jobs with progress, pause, cooperative cancel,
and completion on your thread or your asyncio loop.

    import bgjob

    def copy(w, src, dst):
        w.set_total(os.path.getsize(src))
        with open(src, "rb") as f, open(dst, "wb") as g:
            while block := f.read(1 << 20):
                g.write(block)
                w.add(len(block))        # progress; parks here while paused
                w.check_cancel()         # raises bgjob.Cancelled after cancel()
        return dst                       # becomes job.result()

    with bgjob.start(copy, "a.img", "b.img", name="copy-a") as job:
        print(job.result(timeout=60))    # waits (Ctrl-C interrupts it); raises
                                         # the worker's own exception, Cancelled,
                                         # or TimedOut after 60 s

    jobs = [bgjob.start(copy, s, d) for s, d in pairs]
    for job in bgjob.as_completed(jobs):  # concurrent.futures style
        print(job.name, job.result())

    async def main():                    # inside asyncio: no thread per waiter
        results = await asyncio.gather(*(bgjob.start(copy, s, d) for s, d in pairs))

The C library is found through ``BGJOB_LIBRARY``, then a copy next to this
package, then the system's ``libbgjob.so.0``; importing fails with a clear
message when it is missing or has another ABI.
"""

from ._enums import (
    CancelCause,
    CancelStatus,
    Control,
    ErrorAction,
    ErrorPolicy,
    EventKind,
    IoStatus,
    JobType,
    Result,
    State,
    StatType,
    Verb,
)
from ._errors import (
    BgjobError,
    CallbackErrors,
    Cancelled,
    DeadlineExceeded,
    InternalError,
    InvalidArgument,
    InvalidHandle,
    JobError,
    JobFailed,
    NotAllowed,
    NotFound,
    SystemCallFailed,
    TimedOut,
    TryAgain,
    result_str,
)
from ._ffi import ABI_VERSION, FD_ERROR, FD_HANGUP, FD_READABLE, FD_WRITABLE, LIBRARY
from ._job import (
    ALL_COMPLETED,
    EVENT_QUEUE_BOUND,
    EXCEPTION_CODE,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    DoneAndNotDone,
    Context,
    ControlError,
    ErrorInfo,
    Event,
    Executor,
    Info,
    Job,
    JobEntry,
    JobFuture,
    JobHandle,
    PoolStatus,
    Stat,
    Transaction,
    Worker,
    abi_version,
    as_completed,
    cancel_all,
    current_worker,
    list_jobs,
    lookup,
    loop_context,
    pool_status,
    set_exit_timeout,
    set_log_callback,
    set_max_running,
    start,
    verb_allowed,
    version,
    wait,
)

__version__ = "0.1.0"

__all__ = [
    "ABI_VERSION",
    "ALL_COMPLETED",
    "DoneAndNotDone",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "as_completed",
    "wait",
    "EXCEPTION_CODE",
    "LIBRARY",
    "BgjobError",
    "CallbackErrors",
    "CancelCause",
    "CancelStatus",
    "ErrorAction",
    "ControlError",
    "Event",
    "EventKind",
    "EVENT_QUEUE_BOUND",
    "ErrorPolicy",
    "FD_ERROR",
    "FD_HANGUP",
    "FD_READABLE",
    "FD_WRITABLE",
    "IoStatus",
    "Control",
    "SystemCallFailed",
    "Transaction",
    "Cancelled",
    "DeadlineExceeded",
    "Context",
    "ErrorInfo",
    "Executor",
    "Info",
    "InternalError",
    "InvalidArgument",
    "InvalidHandle",
    "Job",
    "JobEntry",
    "JobFuture",
    "JobError",
    "JobFailed",
    "JobType",
    "PoolStatus",
    "NotAllowed",
    "NotFound",
    "Result",
    "State",
    "Stat",
    "StatType",
    "TimedOut",
    "TryAgain",
    "Verb",
    "Worker",
    "abi_version",
    "cancel_all",
    "current_worker",
    "list_jobs",
    "lookup",
    "JobHandle",
    "loop_context",
    "pool_status",
    "result_str",
    "set_exit_timeout",
    "set_log_callback",
    "set_max_running",
    "start",
    "verb_allowed",
    "version",
]
