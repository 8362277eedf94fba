"""Finding the library, the ABI check at import, and the library-level calls."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import bgjob
from bgjob import _ffi

LIB = os.path.realpath(os.environ.get("BGJOB_LIBRARY") or _ffi.lib._name)


def copy_package(tmp_path, with_library: str | None = None):
    """A copy of the installed package in tmp_path, without any library, or
    with ``with_library`` copied in next to the module."""
    src = os.path.dirname(bgjob.__file__)
    dst = tmp_path / "bgjob"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "libbgjob.so*"))
    if with_library:
        shutil.copy(LIB, dst / with_library)
    return tmp_path


def run_python(tmp_path, code: str, **env_changes):
    env = {k: v for k, v in os.environ.items() if k not in ("BGJOB_LIBRARY", "LD_LIBRARY_PATH", "PYTHONPATH")}
    env["PYTHONPATH"] = str(tmp_path)
    for k, v in env_changes.items():
        if v is not None:
            env[k] = v
        else:
            env.pop(k, None)
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def build_fake_library(tmp_path, body: str) -> str:
    """A shared library that only pretends to be bgjob."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler for the fake library")
    c = tmp_path / "fake.c"
    c.write_text(body)
    so = tmp_path / "libfake.so"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(so), str(c)], check=True)
    return str(so)


SHOW = "import bgjob; print(bgjob.LIBRARY); print(bgjob.version())"


def test_bgjob_library_variable(tmp_path):
    pkg = copy_package(tmp_path)
    r = run_python(pkg, SHOW, BGJOB_LIBRARY=LIB)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"{LIB} (BGJOB_LIBRARY)", bgjob.version()]


def test_copy_next_to_the_module(tmp_path):
    pkg = copy_package(tmp_path, with_library=_ffi.SONAME)
    r = run_python(pkg, SHOW)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == f"{pkg / 'bgjob' / _ffi.SONAME} (next to the module)"


def test_soname_on_the_system_path(tmp_path):
    pkg = copy_package(tmp_path)
    libdir = tmp_path / "lib"
    libdir.mkdir()
    shutil.copy(LIB, libdir / "libbgjob.so.0")
    r = run_python(pkg, SHOW, LD_LIBRARY_PATH=str(libdir))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "libbgjob.so.0 (system library path)"


def test_missing_library_says_where_it_looked(tmp_path):
    pkg = copy_package(tmp_path)
    r = run_python(pkg, "import bgjob")
    assert r.returncode != 0
    if "ImportError" not in r.stderr:
        pytest.fail(r.stderr)
    if "system library path" in r.stderr and "libbgjob.so.0" in r.stderr:
        assert "cannot load the C library" in r.stderr
        assert "Set BGJOB_LIBRARY" in r.stderr
    r = run_python(pkg, "import bgjob", BGJOB_LIBRARY=str(tmp_path / "nowhere.so"))
    assert r.returncode != 0
    assert "cannot load the C library" in r.stderr
    assert "BGJOB_LIBRARY" in r.stderr and "nowhere.so" in r.stderr
    # An explicit BGJOB_LIBRARY is never silently replaced by another copy.
    assert "system library path" not in r.stderr


def test_abi_mismatch_fails_import_clearly(tmp_path):
    so = build_fake_library(tmp_path, "unsigned bgjob_abi_version(void) { return 7; }\n")
    pkg = copy_package(tmp_path)
    r = run_python(pkg, "import bgjob", BGJOB_LIBRARY=so)
    assert r.returncode != 0
    assert "has ABI version 7, but this binding needs ABI 0 (libbgjob.so.0)" in r.stderr


def test_not_a_bgjob_library(tmp_path):
    so = build_fake_library(tmp_path, "int something_else(void) { return 0; }\n")
    pkg = copy_package(tmp_path)
    r = run_python(pkg, "import bgjob", BGJOB_LIBRARY=so)
    assert "is not a bgjob library" in r.stderr


def test_older_library_missing_functions(tmp_path):
    so = build_fake_library(
        tmp_path,
        textwrap.dedent(
            """
            unsigned bgjob_abi_version(void) { return 0; }
            const char *bgjob_version(void) { return "0.0.1"; }
            """
        ),
    )
    pkg = copy_package(tmp_path)
    r = run_python(pkg, "import bgjob", BGJOB_LIBRARY=so)
    assert "lacks" in r.stderr and "bgjob_job_create" in r.stderr
    assert "bgjob_version," not in r.stderr  # it has that one


def test_library_calls():
    assert bgjob.abi_version() == bgjob.ABI_VERSION == 0
    assert bgjob.version() == bgjob.__version__
    assert bgjob.result_str(bgjob.Result.TIMED_OUT)
    assert bgjob.result_str(999) == "unknown result"
    assert str(bgjob.State.RUNNING) == "running"
    assert _ffi.lib.bgjob_state_str(bgjob.State.PAUSED) == b"paused"


def test_typed_handles_refuse_the_wrong_kind():
    ctx = _ffi.ContextPtr()
    with pytest.raises(Exception):
        _ffi.lib.bgjob_job_pause(ctx)
    # A made-up job handle is looked up and refused, never dereferenced.
    import ctypes

    fake = ctypes.cast(0xDEAD00000001, _ffi.JobPtr)
    assert _ffi.lib.bgjob_job_pause(fake) == bgjob.Result.INVALID_HANDLE
    assert _ffi.lib.bgjob_job_pause(None) == bgjob.Result.INVALID_HANDLE


def test_errors_map_to_classes():
    from bgjob._errors import error_for

    R = bgjob.Result
    assert isinstance(error_for(R.INVALID_HANDLE, "x"), bgjob.InvalidHandle)
    assert isinstance(error_for(R.INVALID_ARGUMENT, "x"), ValueError)
    assert isinstance(error_for(R.NOT_ALLOWED, "x"), bgjob.NotAllowed)
    assert isinstance(error_for(R.TIMED_OUT, "x"), TimeoutError)
    assert isinstance(error_for(R.CANCELLED, "x"), bgjob.Cancelled)
    assert isinstance(error_for(R.TRY_AGAIN, "x"), bgjob.TryAgain)
    assert isinstance(error_for(R.NOT_FOUND, "x"), LookupError)
    assert isinstance(error_for(R.PANIC, "x"), bgjob.InternalError)
    e = error_for(R.NOT_ALLOWED, "pause")
    assert e.code == R.NOT_ALLOWED and str(e).startswith("pause: ")
    assert all(issubclass(c, bgjob.BgjobError) for c in (bgjob.JobFailed, bgjob.Cancelled))


# ---- the installed package, as `pip install ./python` made it

INSTALLED = os.path.dirname(os.path.abspath(bgjob.__file__))
BUNDLED = os.path.join(INSTALLED, "libbgjob.so")
SOURCE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # python/


@pytest.mark.skipif(
    not os.path.exists(BUNDLED), reason="installed without a library (BGJOB_NO_BUNDLE=1, or no Rust sources)"
)
def test_the_wheel_brings_one_stripped_library(tmp_path):
    # What a user gets after `pip install ./python`: no environment variable.
    r = run_python(tmp_path, SHOW, PYTHONPATH=None)
    assert r.stdout.splitlines() == [f"{BUNDLED} (next to the module)", bgjob.version()], r.stderr
    # One copy: a file (not a symlink, nor a symlink's target twice).
    assert sorted(n for n in os.listdir(INSTALLED) if n.startswith("libbgjob")) == ["libbgjob.so"]
    assert not os.path.islink(BUNDLED)
    readelf = shutil.which("readelf")
    if readelf is not None:
        sections = subprocess.run([readelf, "-S", "-W", BUNDLED], capture_output=True, text=True, check=True).stdout
        assert ".symtab" not in sections and ".debug_info" not in sections  # stripped
    # BGJOB_LIBRARY still overrides the bundled copy.
    r = run_python(tmp_path, SHOW, PYTHONPATH=None, BGJOB_LIBRARY=LIB)
    assert r.stdout.splitlines()[0] == f"{LIB} (BGJOB_LIBRARY)", r.stderr


def test_install_left_no_build_files_in_the_source_tree():
    # setup.py sends setuptools' build/ and egg-info to a temporary directory.
    left = [n for n in os.listdir(SOURCE) if n == "build" or n.endswith(".egg-info")]
    assert left == []


def test_help_shows_the_enums_not_int():
    import pydoc

    text = pydoc.render_doc(bgjob.State, renderer=pydoc.plaintext)
    assert "RUNNING" in text and "terminal" in text
    assert "bit_length" not in text and "from_bytes" not in text
    assert "bit_length" not in dir(bgjob.Result)
    assert bgjob.State.RUNNING.bit_length() == 1 and bgjob.State.RUNNING + 1 == 2  # still ints
