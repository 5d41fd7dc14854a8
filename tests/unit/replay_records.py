"""Packed kernel records for replay tests: the bytes the ring buffer would hold, built from the
struct layouts of agent/sensors/abi.py (themselves checked against probes/events.h)."""

from __future__ import annotations

import time

from agent.events import Op
from agent.sensors.abi import (
    CGROUP_EVENT,
    EVENT_HEADER,
    EXEC_EVENT,
    EXIT_EVENT,
    FILE_EVENT,
    FORK_EVENT,
    Layout,
)

# pids well above any this machine hands out (pid_max is 4194304 at most): the process table
# falls back to /proc for unknown pids and must find nothing there.
PID = 4_190_000


def _now_boot() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def header(op: Op, pid: int = PID, ppid: int = PID - 1, cgroup_id: int = 1, mntns: int = 4026531840,
           comm: bytes = b"sh", uid: int = 1000, flags: int = 0) -> bytes:
    return EVENT_HEADER.struct.pack(op, flags, 0, pid, pid, ppid, uid, uid, _now_boot(), cgroup_id, mntns, 0, comm)


def _pack(layout: Layout, head: bytes, **fields) -> bytes:
    values = []
    for name, code in layout.fields:
        if name == "h":
            values.append(head)
        else:
            values.append(fields.get(name, b"" if code.endswith("s") else 0))
    return layout.struct.pack(*values)


def exec_rec(filename: str, argv: list[str], **hdr) -> bytes:
    fn, args = filename.encode(), b"\0".join(a.encode() for a in argv) + b"\0"
    return _pack(EXEC_EVENT, header(Op.EXEC, **hdr), filename_len=len(fn), args_len=len(args),
                 filename=fn, args=args)


def fork_rec(child: int, **hdr) -> bytes:
    return _pack(FORK_EVENT, header(Op.FORK, **hdr), child_pid=child)


def exit_rec(code: int = 0, **hdr) -> bytes:
    return _pack(EXIT_EVENT, header(Op.EXIT, **hdr), exit_code=code << 8)


def open_rec(path: str, ret: int = 3, **hdr) -> bytes:
    p = path.encode()
    return _pack(FILE_EVENT, header(Op.FILE_OPEN, **hdr), ret=ret, dirfd=-100, flags=0o101, mode=0o644,
                 fd=-1, path_len=len(p), path=p)


def cgroup_rec(new_id: int, path: str, **hdr) -> bytes:
    p = path.encode()
    return _pack(CGROUP_EVENT, header(Op.CGROUP_MKDIR, **hdr), id=new_id, level=path.count("/"),
                 path_len=len(p), path=p)
