"""The C library: where it is found, the ABI check, and every export declared once.

This module is the only place that knows C types. ``FUNCTIONS`` lists each
export of ``include/bgjob.h`` with its ctypes restype and argtypes;
``tests/test_header.py`` parses the header and fails when an export is missing
here or declared differently, so the binding cannot drift from the library.
"""

from __future__ import annotations

import ctypes
import os
from ctypes import (
    CFUNCTYPE,
    POINTER,
    c_bool,
    c_char,
    c_char_p,
    c_double,
    c_int32,
    c_int64,
    c_size_t,
    c_uint32,
    c_uint64,
    c_void_p,
)

#: The ABI this binding speaks: the number in the library's SONAME.
ABI_VERSION = 0
SONAME = f"libbgjob.so.{ABI_VERSION}"

# Constants of bgjob.h (checked against the header by the tests).
CREATE_DEFER_START = 1
CREATE_MANUAL_FINALIZE = 2
CREATE_EXTERNAL = 4
CREATE_UPDATES_NEVER_PARK = 8
TXN_MANUAL_FINALIZE = 1
DETACH_CANCEL = 1
MAX_STACK_SIZE = 1 << 30
ENTRY_TEXT_SIZE = 64
EVENT_QUEUE_BOUND = 64
FD_READABLE = 1
FD_WRITABLE = 2
FD_ERROR = 4
FD_HANGUP = 8
CHILD_CAPTURE_STDOUT = 1
CHILD_CAPTURE_STDERR = 2
CHILD_INHERIT_STDIN = 4
CHILD_NULL_STDOUT = 8
CHILD_NULL_STDERR = 16
CHILD_SURVIVES_CANCEL = 32
CHILD_NEW_SESSION = 64
CHILD_FD_SAME = -1
CHILD_STDOUT = 1
CHILD_STDERR = 2
CHILD_DEFAULT_GRACE_MS = 5000


# Opaque handle types: a job handle and a context handle are distinct pointer
# types, so passing one where the other belongs is a ctypes TypeError.
class bgjob_job(ctypes.Structure):
    """Opaque ``struct bgjob_job``; only pointers to it exist."""


class bgjob_context(ctypes.Structure):
    """Opaque ``struct bgjob_context``; only pointers to it exist."""


class bgjob_txn(ctypes.Structure):
    """Opaque ``struct bgjob_txn``; only pointers to it exist."""


JobPtr = POINTER(bgjob_job)
ContextPtr = POINTER(bgjob_context)
TxnPtr = POINTER(bgjob_txn)

# Callback types, in the header's order of arguments (userdata first).
bgjob_log_callback = CFUNCTYPE(None, c_void_p, c_char_p)
bgjob_free_callback = CFUNCTYPE(None, c_void_p)
bgjob_worker_callback = CFUNCTYPE(c_int32, c_void_p, JobPtr)
bgjob_completion_callback = CFUNCTYPE(None, c_void_p, JobPtr, c_int32)
bgjob_cancel_hook_callback = CFUNCTYPE(None, c_void_p, JobPtr)
bgjob_finalize_callback = CFUNCTYPE(None, c_void_p, JobPtr)
bgjob_line_callback = CFUNCTYPE(None, c_void_p, JobPtr, c_int32, c_char_p, c_size_t)
bgjob_control_callback = CFUNCTYPE(None, c_void_p, JobPtr, c_int32, c_int64)


class bgjob_event(ctypes.Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("kind", c_int32),
        ("old_state", c_int32),
        ("new_state", c_int32),
        ("action", c_int32),
        ("error_code", c_int32),
        ("seq", c_uint64),
        ("coalesced", c_uint32),
    ]


bgjob_event_callback = CFUNCTYPE(None, c_void_p, JobPtr, POINTER(bgjob_event))


class bgjob_info(ctypes.Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("job_type", c_int32),
        ("state", c_int32),
        ("cancel_requested", c_bool),
        ("pause_requested", c_bool),
        ("elapsed_ms", c_int64),
        ("remaining_ms", c_int64),
        ("percent", c_int32),
        ("error_code", c_int32),
        ("current", c_uint64),
        ("total", c_uint64),
        ("rate", c_double),
        ("since_progress_ms", c_int64),
        ("id", c_uint64),
        ("cancel_cause", c_int32),
        ("pause_count", c_uint32),
        ("iostatus", c_int32),
        ("error_policy", c_int32),
        ("complete_requested", c_bool),
        ("cancel_soft", c_bool),
    ]


class bgjob_job_entry(ctypes.Structure):
    _fields_ = [
        ("id", c_uint64),
        ("state", c_int32),
        ("age_ms", c_int64),
        ("since_progress_ms", c_int64),
        ("name", c_char * ENTRY_TEXT_SIZE),
        ("phase", c_char * ENTRY_TEXT_SIZE),
        ("operation", c_char * ENTRY_TEXT_SIZE),
        ("owner", c_char * ENTRY_TEXT_SIZE),
        ("pause_count", c_uint32),
        ("cancel_requested", c_bool),
        ("cancel_cause", c_int32),
        ("parent_id", c_uint64),
    ]


STAT_UNIT_SIZE = 16
MAX_STATS = 64


class bgjob_stat_value(ctypes.Union):
    _fields_ = [
        ("u64", c_uint64),
        ("i64", c_int64),
        ("f64", c_double),
    ]


class bgjob_stat(ctypes.Structure):
    _fields_ = [
        ("name", c_char * ENTRY_TEXT_SIZE),
        ("unit", c_char * STAT_UNIT_SIZE),
        ("type", c_int32),
        ("value", bgjob_stat_value),
        ("text", c_char * ENTRY_TEXT_SIZE),
    ]


class bgjob_stat_update(ctypes.Structure):
    _fields_ = [
        ("index", c_uint32),
        ("value", bgjob_stat_value),
        ("text", c_char_p),
    ]


class bgjob_job_options(ctypes.Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("job_type", c_int32),
        ("flags", c_uint32),
        ("name", c_char_p),
        ("stack_size", c_size_t),
        ("completion", bgjob_completion_callback),
        ("completion_userdata", c_void_p),
        ("completion_free", bgjob_free_callback),
        ("context", ContextPtr),
        ("deadline_ms", c_int64),
        ("error_policy", c_int32),
        ("commit", bgjob_finalize_callback),
        ("abort", bgjob_finalize_callback),
        ("clean", bgjob_finalize_callback),
        ("finalize_userdata", c_void_p),
        ("finalize_free", bgjob_free_callback),
        ("operation", c_char_p),
        ("owner", c_char_p),
        ("control", bgjob_control_callback),
        ("control_userdata", c_void_p),
        ("control_free", bgjob_free_callback),
        ("event", bgjob_event_callback),
        ("event_userdata", c_void_p),
        ("event_free", bgjob_free_callback),
        ("parent", JobPtr),
    ]


class bgjob_child_fd(ctypes.Structure):
    _fields_ = [
        ("fd", c_int32),
        ("child_fd", c_int32),
    ]


class bgjob_child_options(ctypes.Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("flags", c_uint32),
        ("argv", POINTER(c_char_p)),
        ("envp", POINTER(c_char_p)),
        ("cwd", c_char_p),
        ("grace_ms", c_int64),
        ("on_line", bgjob_line_callback),
        ("line_userdata", c_void_p),
        ("line_free", bgjob_free_callback),
        ("fds", POINTER(bgjob_child_fd)),
        ("fd_count", c_size_t),
    ]


R = c_int32  # bgjob_result

#: name -> (restype, argtypes), for every export of bgjob.h.
FUNCTIONS: dict[str, tuple[object, tuple[object, ...]]] = {
    # library
    "bgjob_version": (c_char_p, ()),
    "bgjob_abi_version": (c_uint32, ()),
    "bgjob_result_str": (c_char_p, (c_int32,)),
    "bgjob_state_str": (c_char_p, (c_int32,)),
    "bgjob_verb_str": (c_char_p, (c_int32,)),
    "bgjob_verb_allowed": (R, (c_int32, c_int32, POINTER(c_bool))),
    "bgjob_set_log_callback": (R, (bgjob_log_callback, c_void_p, bgjob_free_callback)),
    "bgjob_list_jobs": (R, (POINTER(bgjob_job_entry), c_size_t, POINTER(c_size_t))),
    "bgjob_list_jobs_sized": (R, (POINTER(bgjob_job_entry), c_size_t, c_size_t, POINTER(c_size_t))),
    "bgjob_pool_set_max_running": (R, (c_uint32,)),
    "bgjob_pool_get_status": (R, (POINTER(c_uint32), POINTER(c_size_t), POINTER(c_size_t))),
    # contexts
    "bgjob_context_create": (R, (POINTER(ContextPtr),)),
    "bgjob_context_destroy": (R, (ContextPtr,)),
    "bgjob_context_get_fd": (R, (ContextPtr, POINTER(c_int32))),
    "bgjob_context_dispatch": (R, (ContextPtr, c_size_t, POINTER(c_size_t))),
    "bgjob_context_pending": (R, (ContextPtr, POINTER(c_size_t))),
    "bgjob_run_in_thread": (
        R,
        (
            ContextPtr,
            c_char_p,
            bgjob_worker_callback,
            c_void_p,
            bgjob_free_callback,
            bgjob_completion_callback,
            c_void_p,
            bgjob_free_callback,
            POINTER(JobPtr),
        ),
    ),
    # create and control
    "bgjob_job_options_init": (R, (POINTER(bgjob_job_options), c_size_t)),
    "bgjob_job_create": (
        R,
        (
            POINTER(bgjob_job_options),
            bgjob_worker_callback,
            c_void_p,
            bgjob_free_callback,
            POINTER(JobPtr),
        ),
    ),
    "bgjob_job_start": (R, (JobPtr,)),
    "bgjob_job_cancel": (R, (JobPtr, POINTER(c_int32))),
    "bgjob_job_cancel_soft": (R, (JobPtr, POINTER(c_int32))),
    "bgjob_job_cancel_is_soft": (R, (JobPtr, POINTER(c_bool))),
    "bgjob_job_set_ready": (R, (JobPtr,)),
    "bgjob_job_complete": (R, (JobPtr,)),
    "bgjob_job_complete_requested": (R, (JobPtr, POINTER(c_bool))),
    "bgjob_job_pause": (R, (JobPtr,)),
    "bgjob_job_resume": (R, (JobPtr,)),
    "bgjob_job_wait": (R, (JobPtr, c_int64, POINTER(c_int32))),
    "bgjob_job_destroy": (R, (JobPtr,)),
    "bgjob_job_detach": (R, (JobPtr, c_uint32)),
    "bgjob_job_ref": (R, (JobPtr, POINTER(JobPtr))),
    "bgjob_job_lookup": (R, (c_uint64, POINTER(JobPtr))),
    "bgjob_job_set_speed": (R, (JobPtr, c_uint64)),
    "bgjob_job_get_speed": (R, (JobPtr, POINTER(c_uint64))),
    # results
    "bgjob_job_set_result": (R, (JobPtr, c_void_p, bgjob_free_callback)),
    "bgjob_job_get_result": (R, (JobPtr, POINTER(c_void_p))),
    "bgjob_job_take_result": (R, (JobPtr, POINTER(c_void_p))),
    # cancellation
    "bgjob_job_add_cancel_hook": (
        R,
        (JobPtr, bgjob_cancel_hook_callback, c_void_p, bgjob_free_callback, POINTER(c_uint64)),
    ),
    "bgjob_job_remove_cancel_hook": (R, (JobPtr, c_uint64)),
    "bgjob_job_sleep": (R, (JobPtr, c_int64)),
    # read
    "bgjob_job_get_info": (R, (JobPtr, POINTER(bgjob_info))),
    "bgjob_job_get_state": (R, (JobPtr, POINTER(c_int32))),
    "bgjob_job_get_id": (R, (JobPtr, POINTER(c_uint64))),
    "bgjob_job_get_error": (R, (JobPtr, POINTER(c_int32), c_char_p, c_size_t, POINTER(c_size_t))),
    "bgjob_job_get_phase": (R, (JobPtr, c_char_p, c_size_t, POINTER(c_size_t))),
    "bgjob_job_get_name": (R, (JobPtr, c_char_p, c_size_t, POINTER(c_size_t))),
    "bgjob_job_get_operation": (R, (JobPtr, c_char_p, c_size_t, POINTER(c_size_t))),
    "bgjob_job_get_owner": (R, (JobPtr, c_char_p, c_size_t, POINTER(c_size_t))),
    # statistics
    "bgjob_job_add_stat": (R, (JobPtr, c_char_p, c_int32, c_char_p, POINTER(c_uint32))),
    "bgjob_job_set_stat_u64": (R, (JobPtr, c_uint32, c_uint64)),
    "bgjob_job_set_stat_i64": (R, (JobPtr, c_uint32, c_int64)),
    "bgjob_job_set_stat_double": (R, (JobPtr, c_uint32, c_double)),
    "bgjob_job_set_stat_string": (R, (JobPtr, c_uint32, c_char_p)),
    "bgjob_job_set_stats": (R, (JobPtr, POINTER(bgjob_stat_update), c_size_t)),
    "bgjob_job_get_stats": (
        R,
        (JobPtr, POINTER(bgjob_info), POINTER(bgjob_stat), c_size_t, POINTER(c_size_t)),
    ),
    # worker side
    "bgjob_job_check_cancel": (R, (JobPtr,)),
    "bgjob_job_pause_point": (R, (JobPtr,)),
    "bgjob_job_set_total": (R, (JobPtr, c_uint64)),
    "bgjob_job_set_current": (R, (JobPtr, c_uint64)),
    "bgjob_job_add_units": (R, (JobPtr, c_uint64)),
    "bgjob_job_set_percent": (R, (JobPtr, c_int32)),
    "bgjob_job_set_eta": (R, (JobPtr, c_int64)),
    "bgjob_job_set_phase": (R, (JobPtr, c_char_p)),
    "bgjob_job_set_error": (R, (JobPtr, c_int32, c_char_p)),
    "bgjob_job_finish": (R, (JobPtr, c_int32)),
    "bgjob_job_end": (R, (JobPtr, c_int32, c_char_p)),
    # cancellable waits, deadlines
    "bgjob_job_get_wake_fd": (R, (JobPtr, POINTER(c_int32))),
    "bgjob_job_wait_fd": (R, (JobPtr, c_int32, c_uint32, c_int64, POINTER(c_uint32))),
    "bgjob_job_set_deadline": (R, (JobPtr, c_int64)),
    # child processes
    "bgjob_child_options_init": (R, (POINTER(bgjob_child_options), c_size_t)),
    "bgjob_job_spawn_child": (R, (JobPtr, POINTER(bgjob_child_options), POINTER(c_int32))),
    "bgjob_job_watch_child": (R, (JobPtr, c_int32, c_int64)),
    "bgjob_job_wait_child": (R, (JobPtr, c_int32, c_int64, POINTER(c_int32))),
    # QEMU job semantics: drain, error policy, finalize, transactions
    "bgjob_job_pause_internal": (R, (JobPtr,)),
    "bgjob_job_resume_internal": (R, (JobPtr,)),
    "bgjob_job_set_error_policy": (R, (JobPtr, c_int32)),
    "bgjob_job_report_io_error": (R, (JobPtr, c_int32, c_char_p, POINTER(c_int32))),
    "bgjob_job_finalize": (R, (JobPtr,)),
    "bgjob_job_report_state": (R, (JobPtr, c_int32)),
    "bgjob_job_control_failed": (R, (JobPtr, c_int32, c_int32, c_char_p)),
    "bgjob_job_get_control_error": (
        R,
        (JobPtr, POINTER(c_bool), POINTER(c_int32), POINTER(c_int32), c_char_p, c_size_t, POINTER(c_size_t)),
    ),
    "bgjob_job_wait_state": (R, (JobPtr, c_int32, c_int64, POINTER(c_int32))),
    "bgjob_txn_create": (R, (c_uint32, POINTER(TxnPtr))),
    "bgjob_txn_destroy": (R, (TxnPtr,)),
    "bgjob_txn_add": (R, (TxnPtr, JobPtr)),
    "bgjob_txn_start": (R, (TxnPtr,)),
    "bgjob_txn_cancel": (R, (TxnPtr,)),
    "bgjob_txn_finalize": (R, (TxnPtr,)),
}


def _candidates() -> list[tuple[str, str]]:
    """Where to look, in order: (how it was found, what to dlopen)."""
    env = os.environ.get("BGJOB_LIBRARY")
    if env:
        # An explicit choice is never silently replaced by another copy.
        return [("BGJOB_LIBRARY", env)]
    here = os.path.dirname(os.path.abspath(__file__))
    found = [
        ("next to the module", os.path.join(here, name))
        for name in (SONAME, "libbgjob.so")
        if os.path.exists(os.path.join(here, name))
    ]
    found.append(("system library path", SONAME))
    return found


def _open() -> tuple[ctypes.CDLL, str]:
    tried = []
    for how, what in _candidates():
        try:
            # CDLL (not PyDLL): every call releases the GIL, so waits, sleeps
            # and parked progress calls never block other Python threads.
            # use_errno: BGJOB_RESULT_SYSTEM leaves errno set; ctypes keeps a
            # per-thread copy of it for ctypes.get_errno().
            return ctypes.CDLL(what, use_errno=True), f"{what} ({how})"
        except OSError as e:
            tried.append(f"  {how}: {e}")
    raise ImportError(
        "bgjob: cannot load the C library libbgjob.so; tried:\n"
        + "\n".join(tried)
        + "\nSet BGJOB_LIBRARY to the path of libbgjob.so, copy it next to the bgjob "
        "package, or install it (make install) so the system finds "
        + SONAME
        + "."
    )


def load() -> tuple[ctypes.CDLL, str]:
    """Opens the library, checks its ABI, declares every function."""
    lib, where = _open()
    try:
        abi = lib.bgjob_abi_version
    except AttributeError:
        raise ImportError(f"bgjob: {where} is not a bgjob library (no bgjob_abi_version)") from None
    abi.restype, abi.argtypes = c_uint32, ()
    got = abi()
    if got != ABI_VERSION:
        raise ImportError(
            f"bgjob: {where} has ABI version {got}, but this binding needs ABI "
            f"{ABI_VERSION} ({SONAME}); install a matching bgjob library or binding"
        )
    missing = []
    for name, (restype, argtypes) in FUNCTIONS.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            missing.append(name)
            continue
        fn.restype = restype
        fn.argtypes = argtypes
    if missing:
        raise ImportError(
            f"bgjob: {where} lacks {', '.join(missing)}: it is older than this binding; "
            "install a matching bgjob library"
        )
    return lib, where


lib, LIBRARY = load()
