"""Compiles the fake driver libraries in tests/devices/ (fake_nvml.c, ...) with gcc, for tests and benches.

The fakes stand in for the vendor's library at the lowest level: the real pynvml (or our ctypes code)
loads the compiled .so by its vendor soname, so everything above it runs as on a GPU node. A build is
cached by the source's sha256 in a directory of its own, so a test session compiles each fake once;
it is written under a temporary name and renamed, so parallel sessions never load half a file.

    from tests.devices.build import fake_nvml
    lib = fake_nvml()          # Path to .../libnvidia-ml.so.1
    env["LD_LIBRARY_PATH"] = str(lib.parent)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CFLAGS = ("-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror")


class BuildError(RuntimeError):
    """gcc is missing or the source did not compile (one line, then gcc's own message)."""


def missing_compiler() -> str:
    """Why the fakes cannot be built here ("" when they can): for pytest.skip."""
    return "" if shutil.which("gcc") else "gcc not found"


def build(source: str, soname: str, out_dir: str | os.PathLike | None = None) -> Path:
    """tests/devices/<source> compiled to <out_dir>/nodewarden-fake-<stem>-<hash>/<soname> (out_dir: the
    system temp dir by default). The soname is set, so a dlopen of the vendor's name finds it."""
    src = HERE / source
    try:
        text = src.read_bytes()
    except OSError as e:
        raise BuildError(f"cannot read {src}: {e.strerror}") from None
    digest = hashlib.sha256(text + soname.encode() + " ".join(CFLAGS).encode()).hexdigest()[:16]
    name = f"nodewarden-fake-{src.stem}-{digest}"  # a changed source never reuses an old build
    base = (Path(out_dir) if out_dir is not None else Path(tempfile.gettempdir())) / name
    target = base / soname
    if target.exists():
        return target
    if missing_compiler():
        raise BuildError(f"cannot build {source}: gcc not found")
    base.mkdir(parents=True, exist_ok=True)
    partial = base / f".{soname}.{os.getpid()}.tmp"
    cmd = ["gcc", *CFLAGS, f"-Wl,-soname,{soname}", "-o", str(partial), str(src), "-lpthread"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        raise BuildError(f"gcc failed on {source} (exit {proc.returncode}):\n{proc.stderr.strip()}")
    os.replace(partial, target)
    return target


def fake_nvml(out_dir: str | os.PathLike | None = None) -> Path:
    """The fake NVML (tests/devices/fake_nvml.c) as libnvidia-ml.so.1."""
    return build("fake_nvml.c", "libnvidia-ml.so.1", out_dir)


if __name__ == "__main__":  # python -m tests.devices.build: print the fake NVML's path (for benches by hand)
    print(fake_nvml())
