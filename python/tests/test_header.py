"""The binding declares every export of include/bgjob.h, exactly as declared there."""

from __future__ import annotations

import os

import headercheck
import pytest

from bgjob import _ffi

HEADER = headercheck.header_path()


@pytest.fixture(scope="module")
def header_text():
    if not os.path.exists(HEADER):
        pytest.fail(f"{HEADER} not found (set BGJOB_HEADER)")
    with open(HEADER) as f:
        return f.read()


def test_header_and_binding_agree(header_text):
    problems = headercheck.compare(header_text)
    assert problems == [], "bgjob/_ffi.py differs from bgjob.h:\n" + "\n".join(problems)


def test_every_declaration_is_applied_to_the_library(header_text):
    exported = headercheck.parse(header_text)["functions"]
    assert len(exported) >= 45
    for name, (restype, argtypes) in _ffi.FUNCTIONS.items():
        fn = getattr(_ffi.lib, name)
        assert fn.restype is restype, name
        assert tuple(fn.argtypes) == tuple(argtypes), name


def test_struct_sizes_match_what_the_library_fills(header_text):
    # The library writes at most struct_size bytes, and options_init says how
    # many bytes it considers the struct: both must agree with ctypes.
    import ctypes

    opts = _ffi.bgjob_job_options()
    assert _ffi.lib.bgjob_job_options_init(ctypes.byref(opts), ctypes.sizeof(opts)) == 0
    assert opts.struct_size == ctypes.sizeof(_ffi.bgjob_job_options)
    assert headercheck.sizes_match() == []


# The check must be able to fail: each kind of drift is caught.
DRIFTS = [
    (
        "a new export",
        lambda t: t.replace(
            "bgjob_result bgjob_job_pause(struct bgjob_job *job);",
            "bgjob_result bgjob_job_pause(struct bgjob_job *job);\n"
            "bgjob_result bgjob_job_frobnicate(struct bgjob_job *job, int64_t n);",
        ),
        "bgjob_job_frobnicate: exported by bgjob.h, not declared",
    ),
    (
        "an argument added",
        lambda t: t.replace(
            "bgjob_result bgjob_job_pause(struct bgjob_job *job);",
            "bgjob_result bgjob_job_pause(struct bgjob_job *job, uint32_t flags);",
        ),
        "bgjob_job_pause: 2 arguments in the header, 1 in the binding",
    ),
    (
        "an argument type changed",
        lambda t: t.replace(
            "bgjob_result bgjob_job_set_total(struct bgjob_job *job, uint64_t total);",
            "bgjob_result bgjob_job_set_total(struct bgjob_job *job, int32_t total);",
        ),
        "bgjob_job_set_total: argument 2 is int32_t",
    ),
    (
        "a return type changed",
        lambda t: t.replace("uint32_t bgjob_abi_version(void);", "uint64_t bgjob_abi_version(void);"),
        "bgjob_abi_version: returns uint64_t",
    ),
    (
        "an export removed",
        lambda t: t.replace("bgjob_result bgjob_job_resume(struct bgjob_job *job);", ""),
        "bgjob_job_resume: declared in bgjob/_ffi.py, not exported by bgjob.h",
    ),
    (
        "a handle type swapped",
        lambda t: t.replace(
            "bgjob_result bgjob_context_destroy(struct bgjob_context *context);",
            "bgjob_result bgjob_context_destroy(struct bgjob_job *context);",
        ),
        "bgjob_context_destroy: argument 1",
    ),
    (
        "a struct field changed",
        lambda t: t.replace("    uint64_t total;\n} bgjob_info;", "    int64_t total;\n} bgjob_info;")
        if "    uint64_t total;\n} bgjob_info;" in t
        else t.replace("    uint64_t total;", "    int64_t total;", 1),
        "bgjob_info.total",
    ),
    (
        "a callback type changed",
        lambda t: t.replace(
            "typedef void (*bgjob_free_callback)(void *userdata);",
            "typedef void (*bgjob_free_callback)(void *userdata, int32_t why);",
        ),
        "bgjob_free_callback: callback type differs",
    ),
    (
        "an enum value added",
        lambda t: t.replace("BGJOB_RESULT_NOT_FOUND = 8,", "BGJOB_RESULT_NOT_FOUND = 8,\n    BGJOB_RESULT_BUSY = 9,"),
        "enum bgjob_result",
    ),
    (
        "a constant changed",
        lambda t: t.replace("#define BGJOB_ABI_VERSION 0", "#define BGJOB_ABI_VERSION 1"),
        "#define BGJOB_ABI_VERSION",
    ),
]


@pytest.mark.parametrize("what,mutate,expect", DRIFTS, ids=[d[0] for d in DRIFTS])
def test_drift_is_caught(header_text, what, mutate, expect):
    changed = mutate(header_text)
    assert changed != header_text, f"the test's edit for {what!r} no longer applies to bgjob.h"
    problems = headercheck.compare(changed)
    assert any(expect in p for p in problems), problems
