"""Builds bgjob's wheel: the ctypes package and, from a bgjob checkout (this
directory inside the tree that holds Cargo.toml), one stripped libbgjob.so
that cargo builds, which makes the wheel platform-tagged
(py3-none-<platform>: the library does not depend on the Python version).

Without the Rust sources beside it, or with BGJOB_NO_BUNDLE=1, the wheel is
pure Python and the library comes from BGJOB_LIBRARY or the system's
libbgjob.so.0 (`make install`). CARGO and CARGO_TARGET_DIR are honoured.
Nothing is left in the source tree: setuptools' build/ and *.egg-info go to a
temporary directory.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile

from setuptools import Distribution, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MANIFEST = os.path.join(ROOT, "Cargo.toml")
LIBRARY = "libbgjob.so"


def bundling() -> bool:
    """Whether this build puts the library in the wheel."""
    if os.environ.get("BGJOB_NO_BUNDLE", "") not in ("", "0"):
        return False
    return os.path.exists(MANIFEST) and os.path.isdir(os.path.join(ROOT, "src", "ffi"))


def build_library() -> str:
    """cargo's release build of the cdylib (a no-op when it is up to date)."""
    cargo = os.environ.get("CARGO", "cargo")
    if shutil.which(cargo) is None:
        raise SystemExit(
            "bgjob: building the wheel needs cargo (Rust: https://rustup.rs) to build libbgjob.so; "
            "or set BGJOB_NO_BUNDLE=1 to build a pure-Python wheel that uses an installed library"
        )
    subprocess.run([cargo, "build", "--release", "--lib", "--manifest-path", MANIFEST], check=True)
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    return os.path.join(target, "release", LIBRARY)


class BuildPy(build_py):
    def run(self) -> None:
        super().run()
        if not bundling():
            return
        dest_dir = os.path.join(self.build_lib, "bgjob")
        # One copy: none copied into the source package by hand besides it.
        for name in os.listdir(dest_dir):
            if name.startswith("libbgjob.so"):
                os.remove(os.path.join(dest_dir, name))
        dest = os.path.join(dest_dir, LIBRARY)
        shutil.copyfile(build_library(), dest)  # the file, never a symlink
        os.chmod(dest, 0o755)
        strip = shutil.which(os.environ.get("STRIP", "strip"))
        if strip is not None:
            subprocess.run([strip, "--strip-unneeded", dest], check=True)


class BgjobDistribution(Distribution):
    def has_ext_modules(self) -> bool:
        # A native library inside: the wheel is platform-specific and installs
        # as a whole into platlib.
        return bundling()


class BdistWheel(bdist_wheel):
    def get_tag(self) -> tuple[str, str, str]:
        python, abi, plat = super().get_tag()
        if bundling():
            return "py3", "none", plat
        return python, abi, plat


_scratch = tempfile.mkdtemp(prefix="bgjob-setup-")
atexit.register(shutil.rmtree, _scratch, True)

setup(
    distclass=BgjobDistribution,
    cmdclass={"build_py": BuildPy, "bdist_wheel": BdistWheel},
    options={
        "build": {"build_base": os.path.join(_scratch, "build")},
        "egg_info": {"egg_base": _scratch},
    },
)
