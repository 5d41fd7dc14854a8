"""Typed events for the detection tests, decoded from packed kernel records by the real sensors'
decoders (the bytes the ring buffer would hold), then wrapped in Enriched as enrich would."""

from __future__ import annotations

import socket
import struct

from agent.events import ContainerInfo, Enriched, Op, ProcInfo
from agent.sensors import REGISTRY
from agent.sensors.abi import FILE_EVENT, NET_EVENT
from agent.sensors.common import BootClock
from tests.unit.replay_records import PID, exec_rec, header

_CLOCK = BootClock()
_DECODERS = {op: dec for s in REGISTRY.values() for op, dec in s.decoders.items()}

CID = "c0ffee" * 10 + "abcd"
CONTAINER = ContainerInfo(id=CID, name="web", image="registry.local/team/nginx:1.25@sha256:" + "ab" * 32,
                          pod_name="web-0", pod_namespace="shop")
PARENT = ProcInfo(pid=PID - 1, ppid=PID - 2, exe="/usr/sbin/nginx", argv=("nginx", "-g", "daemon off;"),
                  uid=0, start_ns=0, comm="nginx")
GRANDPARENT = ProcInfo(pid=PID - 2, ppid=1, exe="/usr/bin/containerd-shim-runc-v2", argv=("shim",), uid=0,
                       start_ns=0, comm="containerd-shim")


def decode(raw: bytes):
    return _DECODERS[raw[0]](raw, _CLOCK)


def _pack(layout, head: bytes, **fields) -> bytes:
    values = []
    for name, code in layout.fields:
        values.append(head if name == "h" else fields.get(name, b"" if code.endswith("s") else 0))
    return layout.struct.pack(*values)


def file_rec(op: Op, path: str, path2: str = "", flags: int = 0, mode: int = 0, ret: int = 0, **hdr) -> bytes:
    p, p2 = path.encode(), path2.encode()
    return _pack(FILE_EVENT, header(op, **hdr), ret=ret, dirfd=-100, flags=flags, mode=mode, fd=-1,
                 path_len=len(p), path2_len=len(p2), path=p, path2=p2)


def net_rec(op: Op, addr: str, port: int, sock_type: int = 1, ret: int = 0, **hdr) -> bytes:
    if ":" in addr:  # struct sockaddr_in6: family, port, flowinfo, address, scope id
        sa = struct.pack("<H", socket.AF_INET6) + struct.pack("!HI", port, 0) + socket.inet_pton(
            socket.AF_INET6, addr) + b"\0" * 4
    else:
        sa = struct.pack("<H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton(addr) + b"\0" * 8
    return _pack(NET_EVENT, header(op, **hdr), ret=ret, fd=3, sock_type=sock_type, addr_len=len(sa), addr=sa)


def enriched(raw: bytes, container: ContainerInfo | None = CONTAINER, parent: ProcInfo | None = PARENT,
             exe: str = "/bin/sh", argv: tuple[str, ...] = ("sh",)) -> Enriched:
    ev = decode(raw)
    proc = ProcInfo(pid=ev.pid, ppid=ev.ppid, exe=exe, argv=argv, uid=ev.uid, start_ns=0, comm=ev.comm)
    return Enriched(ev, proc, parent, container)


def exec_en(filename: str, argv: list[str], comm: bytes = b"sh", **kw) -> Enriched:
    return enriched(exec_rec(filename, argv, comm=comm), **kw)


def open_en(path: str, flags: int = 0, comm: bytes = b"cat", uid: int = 1000, **kw) -> Enriched:
    return enriched(file_rec(Op.FILE_OPEN, path, flags=flags, mode=0o644, ret=3, comm=comm, uid=uid), **kw)


def connect_en(addr: str, port: int, comm: bytes = b"curl", sock_type: int = 1, uid: int = 1000,
               **kw) -> Enriched:
    return enriched(net_rec(Op.NET_CONNECT, addr, port, sock_type=sock_type, comm=comm, uid=uid), **kw)
