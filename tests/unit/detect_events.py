"""Typed events for the detection tests, decoded from packed kernel records by the real sensors'
decoders (the bytes the ring buffer would hold), then wrapped in Enriched as enrich would."""

from __future__ import annotations

import socket
import struct

from agent.events import ContainerInfo, Enriched, Op, ProcInfo
from agent.sensors import REGISTRY, abi
from agent.sensors.abi import EXEC_EVENT, FILE_EVENT, NET_EVENT, SYS_EVENT
from agent.sensors.common import BootClock
from agent.sensors.system import SYSCALL_NAMES
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
        if name == "h":
            values.append(head)
        elif code[0].isdigit() and not code.endswith("s"):  # an array member ("3q"): one value per element
            values.extend(fields.get(name, (0,) * int(code[:-1])))
        else:
            values.append(fields.get(name, b"" if code.endswith("s") else 0))
    return layout.struct.pack(*values)


def file_rec(op: Op, path: str, path2: str = "", flags: int = 0, mode: int = 0, ret: int = 0, **hdr) -> bytes:
    p, p2 = path.encode(), path2.encode()
    return _pack(FILE_EVENT, header(op, **hdr), ret=ret, dirfd=-100, flags=flags, mode=mode, fd=-1,
                 path_len=len(p), path2_len=len(p2), path=p, path2=p2)


def net_rec(op: Op, addr: str, port: int, sock_type: int = 1, ret: int = 0, fd: int = 3, fd2: int = -1,
            protocol: int = 0, family: int | None = None, **hdr) -> bytes:
    if family is not None:  # socket(): the record carries only the family
        sa = struct.pack("<H", family)
    elif ":" in addr:  # struct sockaddr_in6: family, port, flowinfo, address, scope id
        sa = struct.pack("<H", socket.AF_INET6) + struct.pack("!HI", port, 0) + socket.inet_pton(
            socket.AF_INET6, addr) + b"\0" * 4
    else:
        sa = struct.pack("<H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton(addr) + b"\0" * 8
    return _pack(NET_EVENT, header(op, **hdr), ret=ret, fd=fd, sock_type=sock_type, addr_len=len(sa), addr=sa,
                 fd2=fd2, protocol=protocol)


_CALLS = {name: nr for nr, name in SYSCALL_NAMES.items()}


def sys_rec(op: Op, call: str, ret: int = 0, arg: int = 0, target_pid: int = -1, ids=(-1, -1, -1), caps=(0, 0, 0),
            name: str = "", source: str = "", fstype: str = "", **hdr) -> bytes:
    """A struct sys_event as probes/system.bpf.c writes it; `call` by name (its x86-64 number)."""
    n, src, fs = name.encode(), source.encode(), fstype.encode()
    return _pack(SYS_EVENT, header(op, **hdr), ret=ret, call=_CALLS[call], arg=arg, target_pid=target_pid, ids=ids,
                 caps=caps, name_len=len(n), source_len=len(src), fstype_len=len(fs), name=n, source=src, fstype=fs)


def exec_ident_rec(filename: str, argv: list[str], exe_flags: int = 0, exe_path: str = "", cwd: str = "/",
                   **hdr) -> bytes:
    """An exec record with the identity part (exe_flags, the kernel's path, cwd): memfd, upper layer."""
    fn, args = filename.encode(), b"\0".join(a.encode() for a in argv) + b"\0"
    ep, cw = (exe_path or filename).encode(), cwd.encode()
    return _pack(EXEC_EVENT, header(Op.EXEC, **hdr), filename_len=len(fn), args_len=len(args), filename=fn, args=args,
                 exe_ino=1234, exe_flags=exe_flags, exe_path_len=len(ep), cwd_len=len(cw), exe_path=ep, cwd=cw)


MEMFD_FLAGS = abi.EXE_INTERNAL | abi.EXE_SHMEM | abi.EXE_UNHASHED | abi.EXE_NLINK0
UPPER_FLAGS = abi.EXE_OVERLAY | abi.EXE_UPPER


def enriched(raw: bytes, container: ContainerInfo | None = CONTAINER, parent: ProcInfo | None = PARENT,
             exe: str = "/bin/sh", argv: tuple[str, ...] = ("sh",)) -> Enriched:
    ev = decode(raw)
    proc = ProcInfo(pid=ev.pid, ppid=ev.ppid, exe=exe, argv=argv, uid=ev.uid, start_ns=0, comm=ev.comm)
    return Enriched(ev, proc, parent, container)


def exec_en(filename: str, argv: list[str], comm: bytes = b"sh", uid: int = 1000, **kw) -> Enriched:
    return enriched(exec_rec(filename, argv, comm=comm, uid=uid), **kw)


def sys_en(op: Op, call: str, comm: bytes = b"sh", uid: int = 1000, **kw) -> Enriched:
    fields = {k: kw.pop(k) for k in list(kw) if k not in ("container", "parent", "exe", "argv")}
    return enriched(sys_rec(op, call, comm=comm, uid=uid, **fields), **kw)


def open_en(path: str, flags: int = 0, comm: bytes = b"cat", uid: int = 1000, **kw) -> Enriched:
    return enriched(file_rec(Op.FILE_OPEN, path, flags=flags, mode=0o644, ret=3, comm=comm, uid=uid), **kw)


def connect_en(addr: str, port: int, comm: bytes = b"curl", sock_type: int = 1, uid: int = 1000,
               **kw) -> Enriched:
    return enriched(net_rec(Op.NET_CONNECT, addr, port, sock_type=sock_type, comm=comm, uid=uid), **kw)
