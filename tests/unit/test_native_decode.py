"""The compiled decoders (agent/sensors/_native.c) against their Python reference.

Every record of bench/pipeline.py's replay mix, and records built to reach each branch (invalid
UTF-8 and backslashes, a cwd-relative path, truncation, IPv6, unix and abstract sockets, socket(),
unknown families, a killed process's wait status, short and malformed records), decode to equal
events with both; the replay mix through the whole pipeline gives byte-identical JSON lines.
The shared object is built here when `make setup` has not built it (gcc and the Python headers
are part of the setup).
"""

from __future__ import annotations

import io
import os
import socket
import struct

import orjson
import pytest

from agent.events import Op
from agent.sensors import file, native, net, process
from agent.sensors.abi import FILE_EVENT, NET_EVENT
from agent.sensors.common import BootClock, DecodeError
from tests.unit.detect_events import _pack, file_rec, net_rec
from tests.unit.replay_records import exit_rec, fork_rec, header

REFERENCE = {"exec": process.decode_exec, "file": file.decode_file, "net": net.decode_net, "fork": process.decode_fork,
             "exit": process.decode_exit}


@pytest.fixture(scope="module")
def mod():
    if native.MODULE is not None:
        return native.MODULE
    if os.environ.get("NODEWARDEN_NATIVE") == "0":
        pytest.skip("NODEWARDEN_NATIVE=0")
    native.build()
    loaded = native._load()
    assert loaded is not None, "built, but not loaded (layout check)"
    return loaded


def _kind(raw: bytes) -> str:
    op = raw[0]
    if op == Op.EXEC:
        return "exec"
    if op == Op.FORK:
        return "fork"
    if op == Op.EXIT:
        return "exit"
    return "file" if 10 <= op < 20 else "net"


def _same(mod, raw: bytes) -> None:
    clock = BootClock()
    kind = _kind(raw)
    fast = getattr(mod, f"decode_{kind}")
    try:
        want = REFERENCE[kind](raw, clock)
    except (DecodeError, ValueError, IndexError, KeyError) as e:
        with pytest.raises(type(e)) as got:
            fast(raw, clock)
        assert str(got.value) == str(e)
        return
    have = fast(raw, clock)
    assert type(have) is type(want)
    assert have == want
    assert hash(have) == hash(want)


def _sockaddr_rec(op: Op, sa: bytes, sock_type: int = 1, **hdr) -> bytes:
    return _pack(NET_EVENT, header(op, **hdr), ret=0, fd=3, sock_type=sock_type, addr_len=len(sa), addr=sa,
                 fd2=-1, protocol=0)


def _mix() -> list[bytes]:
    from bench.pipeline import _prologue, _round
    from tests.unit.replay_records import PID

    return _prologue(PID + 1000) + _round(PID + 1000)


def _edge_records() -> list[bytes]:
    wr = os.O_WRONLY | os.O_CREAT
    recs = [
        file_rec(Op.FILE_OPEN, "/tmp/caf\u00e9", flags=wr, ret=3),
        file_rec(Op.FILE_UNLINK, "/run/systemd/dev-disk-by\\x2duuid.swap"),
        file_rec(Op.FILE_RENAME, "/a", "/b", comm=b"mv\\x"),
        file_rec(Op.FILE_OPEN, "rel/x.log", "/home/u", flags=wr, ret=-13),
        file_rec(Op.FILE_CHOWN, "/etc/passwd", ret=-1, comm=b"\xff\xfechown"),
        file_rec(Op.FILE_SYMLINK, "/l", "/target" * 60),  # longer than PATH_MAX: cut at the record's 256 bytes
        net_rec(Op.NET_CONNECT, "10.1.2.3", 443),
        net_rec(Op.NET_CONNECT, "fe80::1", 8443, sock_type=2),
        net_rec(Op.NET_BIND, "0.0.0.0", 80),
        net_rec(Op.NET_LISTEN, "::", 22, ret=0),
        net_rec(Op.NET_SOCKET, "", 0, family=socket.AF_INET6, ret=5, protocol=6),
        net_rec(Op.NET_SOCKET, "", 0, family=socket.AF_PACKET, sock_type=3),
        net_rec(Op.NET_SOCKET, "", 0, family=77),
        net_rec(Op.NET_DUP, "10.0.0.9", 4444, fd=3, fd2=1),
        _sockaddr_rec(Op.NET_CONNECT, struct.pack("<H", socket.AF_UNIX) + b"/run/docker.sock\0junk"),
        _sockaddr_rec(Op.NET_CONNECT, struct.pack("<H", socket.AF_UNIX) + b"\0abstract\xff\0x"),
        _sockaddr_rec(Op.NET_CONNECT, struct.pack("<H", socket.AF_UNIX)),
        _sockaddr_rec(Op.NET_CONNECT, struct.pack("<H", socket.AF_INET) + b"\0\x50"),  # too short: af2
        _sockaddr_rec(Op.NET_SENDTO, struct.pack("<H", socket.AF_NETLINK) + b"\0" * 10, sock_type=2),
        _sockaddr_rec(Op.NET_CONNECT, struct.pack("<H", 99) + b"\0" * 10, sock_type=3),
        _sockaddr_rec(Op.NET_CONNECT, b"\x02"),
        _sockaddr_rec(Op.NET_ACCEPT, b""),
        fork_rec(77, comm=b"bash", flags=1),
        exit_rec(0x0109),  # exited 1
        exit_rec(9),  # killed by SIGKILL
        exit_rec(-1),
    ]
    # flags: truncated, and cwd-relative (path2 is the cwd)
    recs.append(file_rec(Op.FILE_OPEN, "out.txt", "/work", flags=wr, ret=4))
    p, cwd = b"x/y", b"/srv/w\\eb"
    recs.append(_pack(FILE_EVENT, header(Op.FILE_OPEN, flags=0x04 | 0x01), ret=3, dirfd=-100, flags=wr, mode=0o644,
                      fd=-1, path_len=len(p), path2_len=len(cwd), path=p, path2=cwd))
    # a length past the buffer the kernel never sends: cut at the member, as the Python decoder does
    recs.append(_pack(FILE_EVENT, header(Op.FILE_OPEN), ret=3, dirfd=-100, path_len=10_000, path2_len=0,
                      path=b"/p" * 200))
    # exec: the identity part's flags (memfd, deleted, upper layer), odd argv blocks, an older probe's record
    from agent.sensors import abi
    from tests.unit.detect_events import exec_ident_rec

    recs += [exec_ident_rec("/bin/sh", ["sh", "-c", "echo \\x; caf\u00e9"], cwd="/home/u"),
             exec_ident_rec("/proc/self/fd/3", ["x"], exe_flags=abi.EXE_INTERNAL | abi.EXE_SHMEM | abi.EXE_UNHASHED,
                            exe_path="/memfd:payload"),
             exec_ident_rec("/tmp/a", ["a"], exe_flags=abi.EXE_NLINK0 | abi.EXE_UPPER, exe_path="/tmp/a"),
             exec_ident_rec("/tmp/b", ["b"], exe_flags=abi.EXE_UNHASHED | abi.EXE_IS_ROOT, exe_path="/"),
             exec_ident_rec("/tmp/c", [], exe_flags=abi.EXE_NLINK0, exe_path=""),
             exec_ident_rec("/x", ["a", "", "b"], exe_flags=abi.EXE_INTERNAL, exe_path="/memfd:no-shmem")]
    ident = exec_ident_rec("/usr/bin/env", ["env", "A=1"])
    recs += [ident[: abi.EXEC_EVENT.offsets["exe_flags"]], ident[:1500], ident[:1375]]  # old probe; too short
    for block in (b"", b"\0", b"one", b"a\0\0b\0", b"\xff\xfe\0z\\\0", b"x" * 1100):
        recs.append(_pack(abi.EXEC_EVENT, header(Op.EXEC, flags=1), filename_len=3, args_len=len(block),
                          filename=b"/sh", args=block[:1024], exe_dev=(8 << 20) | 0x1234, exe_ino=77))
    # malformed: shorter than the header, than the body
    recs += [file_rec(Op.FILE_OPEN, "/x")[:40], file_rec(Op.FILE_OPEN, "/x")[:300], net_rec(Op.NET_CONNECT,
             "1.2.3.4", 1)[:100], fork_rec(5)[:68], exit_rec(0)[:64], b"\x0a"]
    return recs


def test_layout_matches_abi(mod):
    assert mod.layout() == native._expected()


def test_mix_decodes_the_same(mod):
    for raw in _mix():
        _same(mod, raw)


def test_edges_decode_the_same(mod):
    for raw in _edge_records():
        _same(mod, raw)


def test_garbage_never_crashes(mod):
    """Random bytes with a known op: the same event or the same error from both."""
    import random

    rnd = random.Random(17)
    for _ in range(3000):
        op = rnd.choice([Op.EXEC, Op.FILE_OPEN, Op.FILE_RENAME, Op.NET_CONNECT, Op.NET_SOCKET, Op.FORK, Op.EXIT])
        size = rnd.choice([8, 64, 72, 100, 224, 300, 616, 700, 1375, 1376, 1904, 2000])
        raw = bytes([op]) + rnd.randbytes(size - 1)
        _same(mod, raw)


def test_bad_arguments_are_errors(mod):
    with pytest.raises(TypeError):
        mod.decode_file(b"")
    with pytest.raises(TypeError):
        mod.decode_net(12345, BootClock())
    with pytest.raises(AttributeError):
        mod.decode_fork(fork_rec(1), object())  # no clock offset


def test_pipeline_json_is_byte_identical(mod):
    """The replay mix through the real pipeline, once with the reference decoders and once with the compiled
    ones: the same JSON lines, byte for byte (timestamps included: one clock offset for both)."""
    from agent.config import Config
    from agent.detect.engine import build
    from agent.outputs.log import JsonLog
    from agent.pipeline import Pipeline
    from agent.sensors.replay import ReplayProbes
    from bench.pipeline import _containers

    recs = _mix() + _edge_records()
    outs = []
    for compiled in (False, True):
        buf = io.BytesIO()
        probes = ReplayProbes([])
        swap = {getattr(mod, f"decode_{k}"): (getattr(mod, f"decode_{k}") if compiled else ref)
                for k, ref in REFERENCE.items()}
        probes.decoders = {op: swap.get(dec, dec) for op, dec in probes.decoders.items()}
        if not compiled:
            assert all(not isinstance(d, type(mod.decode_file)) for d in probes.decoders.values())
        p = Pipeline(Config(), [JsonLog(buf).emit], containers=_containers(), probes=probes,
                     detector=build(None)[0])
        p.clock.offset = 1_700_000_000_000_000_000
        for i in range(0, len(recs), 64):
            p._process(recs[i : i + 64])
        p._release(force=True)
        outs.append((buf.getvalue(), dict(p.drops)))
    assert outs[0] == outs[1]
    lines = outs[0][0].splitlines()
    assert len(lines) > 150 and all(orjson.loads(ln) for ln in lines)
    assert outs[0][1]["decode"] == 7  # the malformed records, counted alike


def test_the_wall_clock_sum_is_pythons(mod):
    """The event's time is the boot time plus the clock's offset: summed in C when both fit 64 bits, by Python
    otherwise (a boot time past 2**63, an offset past it, one that is not an int); always Python's sum."""
    clock = BootClock()
    rec = bytearray(file_rec(Op.FILE_OPEN, "/x"))
    for boot in (0, 10**18, 2**63 - 1, 2**63, 2**64 - 1):
        struct.pack_into("<Q", rec, 24, boot)
        for offset in (0, -(10**18), 2**62, 2**63 - 1, -(2**63), 2**70, 1.5):
            clock.offset = offset
            assert mod.decode_file(bytes(rec), clock).ts_ns == file.decode_file(bytes(rec), clock).ts_ns
    clock.offset = "not a number"
    with pytest.raises(TypeError):
        mod.decode_file(bytes(rec), clock)
