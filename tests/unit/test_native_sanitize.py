"""The compiled hot path under AddressSanitizer and UBSan: `python -m agent.sensors.native_build --sanitize`
builds _native.c with -fsanitize=address,undefined into build/native-asan/ (never the object the agent
loads), and the native tests run again in a child that loads it (NODEWARDEN_NATIVE_SO) with gcc's libasan
preloaded (the interpreter itself is not instrumented), PYTHONMALLOC=malloc so that ASan sees every
object's memory, and leak detection off (CPython frees little at exit). An out-of-bounds read, a
use-after-free or undefined behaviour in the C aborts the child with its report.

By hand: LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 PYTHONMALLOC=malloc
NODEWARDEN_NATIVE_SO=build/native-asan/_nwnative.<suffix>.so python -m pytest tests/unit/test_native_*.py"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from agent.sensors import native

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TESTS = ["tests/unit/test_native_hostile.py", "tests/unit/test_native_decode.py", "tests/unit/test_native_json.py",
         "tests/unit/test_flatten_fragments.py", "tests/unit/test_native_pipeline.py", "tests/unit/test_native_pb.py"]


def _libasan() -> str | None:
    if shutil.which("gcc") is None:
        return None
    out = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    return out if os.path.isabs(out) and os.path.exists(out) else None


def test_native_tests_pass_under_asan_and_ubsan():
    if os.environ.get("NODEWARDEN_NATIVE") == "0":
        pytest.skip("NODEWARDEN_NATIVE=0")
    if os.environ.get("NODEWARDEN_NATIVE_SO"):
        pytest.skip("already the sanitizer run")
    lib = _libasan()
    if lib is None:
        pytest.skip("no gcc libasan (scripts/setup.sh installs gcc)")
    so = native.build(sanitize=True)
    env = dict(os.environ, LD_PRELOAD=lib, NODEWARDEN_NATIVE_SO=so, PYTHONMALLOC="malloc",
               ASAN_OPTIONS="detect_leaks=0:abort_on_error=1",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                           "-k", "not leak_check", *TESTS], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    tail = (done.stdout + done.stderr)[-4000:]
    assert done.returncode == 0, tail
    assert "ERROR: AddressSanitizer" not in tail and "runtime error:" not in tail, tail
    assert " passed" in done.stdout, tail
