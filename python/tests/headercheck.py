"""Reads include/bgjob.h and compares it with the binding's declarations.

``compare(header_text)`` returns a list of problems (empty when the binding
matches): a function the header exports that ``bgjob._ffi.FUNCTIONS`` lacks or
declares with other types, one the binding declares that the header no longer
has, callback typedefs, struct layouts, enum values and constants.
"""

from __future__ import annotations

import ctypes
import enum
import os
import re
from ctypes import (
    POINTER,
    c_bool,
    c_char,
    c_char_p,
    c_double,
    c_int,
    c_int32,
    c_int64,
    c_size_t,
    c_uint32,
    c_uint64,
    c_void_p,
)
from typing import Any

import bgjob
from bgjob import _ffi

HERE = os.path.dirname(os.path.abspath(__file__))


def header_path() -> str:
    return os.environ.get("BGJOB_HEADER") or os.path.join(HERE, "..", "..", "include", "bgjob.h")


def strip(text: str) -> str:
    """The header without comments and preprocessor lines."""
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


BASE = {
    "void": None,
    "bool": c_bool,
    "char": c_char,
    "int": c_int,
    "double": c_double,
    "int32_t": c_int32,
    "uint32_t": c_uint32,
    "int64_t": c_int64,
    "uint64_t": c_uint64,
    "size_t": c_size_t,
    # The enum typedefs are int32_t in C (the header's `typedef int32_t bgjob_x;`).
    "bgjob_result": c_int32,
    "bgjob_state": c_int32,
    "bgjob_verb": c_int32,
    "bgjob_job_type": c_int32,
    "bgjob_cancel_status": c_int32,
    "bgjob_cancel_cause": c_int32,
    "bgjob_error_policy": c_int32,
    "bgjob_error_action": c_int32,
    "bgjob_event_kind": c_int32,
    "bgjob_iostatus": c_int32,
    "bgjob_stat_type": c_int32,
    "bgjob_control": c_int32,
}


def named_types() -> dict[str, Any]:
    """Every struct and callback typedef the binding defines, by C name."""
    out = {}
    for name in dir(_ffi):
        obj = getattr(_ffi, name)
        if name.startswith("bgjob_") and isinstance(obj, type):
            out[name] = obj
    return out


class UnknownType(Exception):
    pass


def ctype_of(decl: str, names: dict[str, Any]) -> Any:
    """The ctypes type for a C type such as ``const struct bgjob_job **``."""
    decl = re.sub(r"\b(const|struct|enum|union)\b", " ", decl)
    stars = decl.count("*")
    base = decl.replace("*", " ").split()
    if len(base) != 1:
        raise UnknownType(decl)
    base = base[0]
    if stars and base == "char":
        t: Any = c_char_p
        stars -= 1
    elif stars and base == "void":
        t = c_void_p
        stars -= 1
    elif base in BASE:
        t = BASE[base]
    elif base in names:
        t = names[base]
    else:
        raise UnknownType(base)
    for _ in range(stars):
        t = POINTER(t)
    return t


def split_params(params: str) -> list[str]:
    """Parameter types of a C parameter list (names dropped)."""
    params = " ".join(params.split())
    if params in ("", "void"):
        return []
    out = []
    for p in params.split(","):
        p = p.strip()
        m = re.match(r"^(.*?[\s\*])([A-Za-z_]\w*)$", p)
        out.append(m.group(1).strip() if m else p)
    return out


def parse(text: str) -> dict[str, Any]:
    body = strip(text)
    functions = {}
    for m in re.finditer(r"([A-Za-z_][\w\s\*]*?)\b(bgjob_\w+)\s*\(([^()]*)\)\s*;", body):
        ret, name, params = m.group(1), m.group(2), m.group(3)
        ret = ret.split(";")[-1].split("}")[-1].strip()
        if ret.startswith("typedef"):
            continue
        functions[name] = (ret, split_params(params))
    callbacks = {}
    for m in re.finditer(r"typedef\s+([\w\s\*]+?)\s*\(\s*\*\s*(bgjob_\w+)\s*\)\s*\(([^()]*)\)\s*;", body):
        callbacks[m.group(2)] = (m.group(1).strip(), split_params(m.group(3)))
    structs = {}
    for m in re.finditer(r"typedef\s+struct\s+(bgjob_\w+)\s*\{(.*?)\}\s*\1\s*;", body, flags=re.S):
        fields = []
        for f in m.group(2).split(";"):
            f = " ".join(f.split())
            if not f:
                continue
            fm = re.match(r"^(.*?[\s\*])([A-Za-z_]\w*)\s*(?:\[\s*(\w+)\s*\])?$", f)
            if fm is None:
                fields.append((f, None, None))
                continue
            fields.append((fm.group(2), fm.group(1).strip(), fm.group(3)))
        structs[m.group(1)] = fields
    opaque = set(re.findall(r"typedef\s+struct\s+(bgjob_\w+)\s+\1\s*;", body))
    enums = {}
    for m in re.finditer(r"enum\s+(bgjob_\w+)\s*(?::\s*\w+\s*)?\{(.*?)\}", body, flags=re.S):
        values = {}
        for item in m.group(2).split(","):
            item = " ".join(item.split())
            if item:
                k, _, v = item.partition("=")
                values[k.strip()] = int(v.strip(), 0)
        enums[m.group(1)] = values
    defines = {}
    for m in re.finditer(r"^#define[ \t]+(BGJOB_\w+)[ \t]+(\S.*)$", text, flags=re.M):
        defines[m.group(1)] = m.group(2).strip()
    return {
        "functions": functions,
        "callbacks": callbacks,
        "structs": structs,
        "opaque": opaque,
        "enums": enums,
        "defines": defines,
    }


def tname(t: Any) -> str:
    return "void" if t is None else getattr(t, "__name__", repr(t))


# C enum name -> the binding's IntEnum and the prefix of its enumerators.
ENUMS: dict[str, tuple[type[enum.IntEnum], str]] = {
    "bgjob_result": (bgjob.Result, "BGJOB_RESULT_"),
    "bgjob_state": (bgjob.State, "BGJOB_STATE_"),
    "bgjob_verb": (bgjob.Verb, "BGJOB_VERB_"),
    "bgjob_job_type": (bgjob.JobType, "BGJOB_JOB_TYPE_"),
    "bgjob_cancel_status": (bgjob.CancelStatus, "BGJOB_CANCEL_STATUS_"),
    "bgjob_stat_type": (bgjob.StatType, "BGJOB_STAT_TYPE_"),
    "bgjob_cancel_cause": (bgjob.CancelCause, "BGJOB_CANCEL_CAUSE_"),
    "bgjob_error_policy": (bgjob.ErrorPolicy, "BGJOB_ERROR_POLICY_"),
    "bgjob_error_action": (bgjob.ErrorAction, "BGJOB_ERROR_ACTION_"),
    "bgjob_event_kind": (bgjob.EventKind, "BGJOB_EVENT_KIND_"),
    "bgjob_iostatus": (bgjob.IoStatus, "BGJOB_IOSTATUS_"),
    "bgjob_control": (bgjob.Control, "BGJOB_CONTROL_"),
}

# #define name -> the binding's value.
DEFINES = {
    "BGJOB_ABI_VERSION": _ffi.ABI_VERSION,
    "BGJOB_RESULT_COUNT": len(bgjob.Result),
    "BGJOB_STATE_COUNT": len(bgjob.State),
    "BGJOB_VERB_COUNT": len(bgjob.Verb),
    "BGJOB_CREATE_DEFER_START": _ffi.CREATE_DEFER_START,
    "BGJOB_CREATE_EXTERNAL": _ffi.CREATE_EXTERNAL,
    "BGJOB_CREATE_MANUAL_FINALIZE": _ffi.CREATE_MANUAL_FINALIZE,
    "BGJOB_CREATE_UPDATES_NEVER_PARK": _ffi.CREATE_UPDATES_NEVER_PARK,
    "BGJOB_TXN_MANUAL_FINALIZE": _ffi.TXN_MANUAL_FINALIZE,
    "BGJOB_DETACH_CANCEL": _ffi.DETACH_CANCEL,
    "BGJOB_MAX_STACK_SIZE": _ffi.MAX_STACK_SIZE,
    "BGJOB_ENTRY_TEXT_SIZE": _ffi.ENTRY_TEXT_SIZE,
    "BGJOB_EVENT_QUEUE_BOUND": _ffi.EVENT_QUEUE_BOUND,
    "BGJOB_MAX_STATS": _ffi.MAX_STATS,
    "BGJOB_STAT_UNIT_SIZE": _ffi.STAT_UNIT_SIZE,
    "BGJOB_FD_READABLE": _ffi.FD_READABLE,
    "BGJOB_FD_WRITABLE": _ffi.FD_WRITABLE,
    "BGJOB_FD_ERROR": _ffi.FD_ERROR,
    "BGJOB_FD_HANGUP": _ffi.FD_HANGUP,
    "BGJOB_CHILD_CAPTURE_STDOUT": _ffi.CHILD_CAPTURE_STDOUT,
    "BGJOB_CHILD_CAPTURE_STDERR": _ffi.CHILD_CAPTURE_STDERR,
    "BGJOB_CHILD_INHERIT_STDIN": _ffi.CHILD_INHERIT_STDIN,
    "BGJOB_CHILD_NULL_STDOUT": _ffi.CHILD_NULL_STDOUT,
    "BGJOB_CHILD_NULL_STDERR": _ffi.CHILD_NULL_STDERR,
    "BGJOB_CHILD_SURVIVES_CANCEL": _ffi.CHILD_SURVIVES_CANCEL,
    "BGJOB_CHILD_NEW_SESSION": _ffi.CHILD_NEW_SESSION,
    "BGJOB_CHILD_FD_SAME": _ffi.CHILD_FD_SAME,
    "BGJOB_CHILD_STDOUT": _ffi.CHILD_STDOUT,
    "BGJOB_CHILD_STDERR": _ffi.CHILD_STDERR,
    "BGJOB_CHILD_DEFAULT_GRACE_MS": _ffi.CHILD_DEFAULT_GRACE_MS,
}


def eval_define(value: str) -> int | None:
    if not re.fullmatch(r"[\s\d()<>+\-*|x]+", value):
        return None
    return int(eval(value, {"__builtins__": {}}))  # digits and operators only


def compare(text: str, functions: dict[str, Any] | None = None) -> list[str]:
    """Problems between header ``text`` and the binding (empty: they match)."""
    h = parse(text)
    names = named_types()
    declared = _ffi.FUNCTIONS if functions is None else functions
    problems: list[str] = []

    def resolve(decl: str, where: str) -> Any:
        try:
            return ctype_of(decl, names)
        except UnknownType as e:
            problems.append(f"{where}: the binding has no type for C type {e}")
            return object()  # matches nothing

    for name, (ret, params) in sorted(h["functions"].items()):
        if name not in declared:
            problems.append(f"{name}: exported by bgjob.h, not declared in bgjob/_ffi.py")
            continue
        restype, argtypes = declared[name]
        want_ret = resolve(ret, f"{name} return")
        want_args = [resolve(p, f"{name} argument {i + 1}") for i, p in enumerate(params)]
        if restype is not want_ret:
            problems.append(f"{name}: returns {ret} ({tname(want_ret)}), binding says {tname(restype)}")
        if len(argtypes) != len(want_args):
            problems.append(f"{name}: {len(want_args)} arguments in the header, {len(argtypes)} in the binding")
        else:
            for i, (got, want) in enumerate(zip(argtypes, want_args)):
                if got is not want:
                    problems.append(
                        f"{name}: argument {i + 1} is {params[i]} ({tname(want)}), binding says {tname(got)}"
                    )
    for name in sorted(set(declared) - set(h["functions"])):
        problems.append(f"{name}: declared in bgjob/_ffi.py, not exported by bgjob.h")

    for name, (ret, params) in sorted(h["callbacks"].items()):
        cb = names.get(name)
        if cb is None:
            problems.append(f"{name}: callback type in bgjob.h, missing from bgjob/_ffi.py")
            continue
        want_ret = resolve(ret, f"{name} return")
        want_args = [resolve(p, f"{name} argument {i + 1}") for i, p in enumerate(params)]
        if cb._restype_ is not want_ret or list(cb._argtypes_) != want_args:
            problems.append(f"{name}: callback type differs from bgjob.h")

    for name in sorted(h["opaque"]):
        t = names.get(name)
        if t is None or getattr(t, "_fields_", None):
            problems.append(f"{name}: opaque handle type in bgjob.h, missing from bgjob/_ffi.py")

    for name, fields in sorted(h["structs"].items()):
        t = names.get(name)
        if t is None:
            problems.append(f"{name}: struct in bgjob.h, missing from bgjob/_ffi.py")
            continue
        got = list(getattr(t, "_fields_", []))
        want = []
        for fname, ftype, length in fields:
            if ftype is None:
                problems.append(f"{name}: cannot read field {fname!r}")
                continue
            ct = resolve(ftype, f"{name}.{fname}")
            if length is not None:
                n = int(length) if length.isdigit() else eval_define(h["defines"].get(length, ""))
                ct = ct * n if n is not None and isinstance(ct, type) else object()
            want.append((fname, ct))
        if [f[0] for f in got] != [f[0] for f in want]:
            problems.append(
                f"{name}: fields {[f[0] for f in want]} in bgjob.h, {[f[0] for f in got]} in the binding"
            )
            continue
        for (fname, gt), (_, wt) in zip(got, want):
            same = gt is wt or (
                hasattr(gt, "_length_")
                and hasattr(wt, "_length_")
                and gt._type_ is wt._type_
                and gt._length_ == wt._length_
            )
            if not same:
                problems.append(f"{name}.{fname}: {tname(wt)} in bgjob.h, {tname(gt)} in the binding")

    for cname, values in sorted(h["enums"].items()):
        if cname not in ENUMS:
            problems.append(f"enum {cname}: in bgjob.h, no Python enum for it (tests/headercheck.py ENUMS)")
            continue
        py, prefix = ENUMS[cname]
        want = {k[len(prefix):]: v for k, v in values.items()}
        got = {m.name: int(m) for m in py}
        if want != got:
            problems.append(f"enum {cname}: {want} in bgjob.h, {got} in bgjob.{py.__name__}")

    for dname in sorted(set(DEFINES) - set(h["defines"])):
        problems.append(f"#define {dname}: known to the binding, not in bgjob.h")
    for dname, value in sorted(h["defines"].items()):
        if dname.startswith("BGJOB_VERSION_") or dname == "BGJOB_H":
            continue
        if dname not in DEFINES:
            problems.append(f"#define {dname}: in bgjob.h, unknown to the binding (tests/headercheck.py DEFINES)")
            continue
        if eval_define(value) != DEFINES[dname]:
            problems.append(f"#define {dname}: {value} in bgjob.h, {DEFINES[dname]} in the binding")
    return problems


def sizes_match() -> list[str]:
    """The ctypes structs' sizes (what the C library will write) are sane."""
    out = []
    for t in (_ffi.bgjob_info, _ffi.bgjob_job_options, _ffi.bgjob_job_entry):
        if ctypes.sizeof(t) == 0:
            out.append(f"{t.__name__} has size 0")
    return out
