"""Run a program inside a given cgroup (v2 directory), as runc would put a container's first process there."""

from __future__ import annotations

import subprocess

# The child joins the cgroup itself, from a shell, then execs the program: the exec the kernel judges
# happens inside the cgroup. Not preexec_fn: Python code in a forked child of a threaded test process
# (gRPC's fork handlers among its threads) can crash before it gets to exec.
_JOIN = 'echo $$ > "$0/cgroup.procs" && exec "$@"'


def run_in(cg_path: str, argv: list[str], timeout: float = 30) -> int:
    """argv's exit status (negative: the signal that killed it) when started inside cg_path."""
    return subprocess.run(["/bin/sh", "-c", _JOIN, cg_path, *argv], capture_output=True, timeout=timeout).returncode
