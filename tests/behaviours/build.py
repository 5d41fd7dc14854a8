"""Compile tests/behaviours/nwbehave.c with gcc.

Static by default (Debian's libc6-dev ships libc.a), so the one binary also runs inside a busybox or
distroless container image that has no glibc of its own. The result is rebuilt only when the source
is newer than it, so a test module may call build() freely.
"""

from __future__ import annotations

import os
import shutil
import subprocess

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nwbehave.c")


class BuildError(RuntimeError):
    """gcc is missing or refused the source; the message says which and carries gcc's stderr."""


def build(out_dir: str, static: bool = True) -> str:
    """Compile nwbehave into out_dir (made if absent) and return the binary's path."""
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, "nwbehave")
    if os.path.exists(out) and os.path.getmtime(out) >= os.path.getmtime(SOURCE):
        return out
    gcc = shutil.which("gcc")
    if gcc is None:
        raise BuildError("gcc not found on PATH (Debian: apt-get install gcc libc6-dev)")
    tmp = f"{out}.{os.getpid()}.tmp"  # renamed into place: a concurrent build never runs a half-written file
    cmd = [gcc, "-O2", "-Wall", "-Werror", *(["-static"] if static else []), "-o", tmp, SOURCE]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise BuildError(f"{' '.join(cmd)} failed (rc {p.returncode}): {p.stderr.strip()}")
    os.replace(tmp, out)
    return out


if __name__ == "__main__":
    import sys

    print(build(sys.argv[1] if len(sys.argv) > 1 else ".", static="--dynamic" not in sys.argv))
