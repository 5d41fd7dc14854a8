"""Decoders read packed bytes right (the layouts against probes/events.h: tests/unit/test_abi.py)."""

import socket
import struct

import pytest

from agent.events import Op
from agent.sensors import file, net, process
from agent.sensors.common import HEADER, BootClock, DecodeError, escape, unescape


def _header(op, flags=0, pid=10, ppid=1, uid=1000, ts=5, comm=b"sh"):
    return HEADER.pack(op, flags, 0, pid, pid, ppid, uid, 100, ts, 77, 4026531840, 0, comm)


def test_decode_exec_splits_argv_and_keeps_bad_utf8():
    clock = BootClock()
    clock.offset = 1000
    args = b"/bin/echo\0hello world\0\xff\0"
    body = struct.pack("<II", 9, len(args)) + b"/bin/echo".ljust(256, b"\0") + args.ljust(1024, b"\0")
    body += struct.pack("<IIQII", 2, (1 << 16) | 3, 77, 5, 0)
    ev = process.decode_exec(_header(Op.EXEC) + body, clock)
    assert (ev.action, ev.rule) == (2, (1 << 16) | 3)
    assert ev.filename == "/bin/echo"
    assert ev.argv == ("/bin/echo", "hello world", "\\xff")
    assert (ev.exe_ino, ev.exe_dev) == (77, 5)  # MKDEV(0, 5) is st_dev 5 too
    assert ev.ts_ns == 1005 and ev.uid == 1000 and ev.ppid == 1 and ev.comm == "sh"


def test_decode_exit_splits_status_and_signal():
    ev = process.decode_exit(_header(Op.EXIT) + struct.pack("<iI", (3 << 8), 0), BootClock())
    assert (ev.exit_code, ev.signal) == (3, 0)
    ev = process.decode_exit(_header(Op.EXIT) + struct.pack("<iI", 9, 0), BootClock())
    assert (ev.exit_code, ev.signal) == (0, 9)


def test_decode_short_record_is_an_error_not_a_crash():
    with pytest.raises(DecodeError):
        process.decode_exec(_header(Op.EXEC) + b"\0" * 10, BootClock())
    with pytest.raises(DecodeError):
        file.decode_file(b"\x0a\0", BootClock())


def test_decode_file_rename():
    body = struct.pack("<qiIIIIiII", 0, -100, 0, 0, 0xFFFFFFFF, 0xFFFFFFFF, -1, 6, 6)
    body += b"/tmp/a".ljust(256, b"\0") + b"/tmp/b".ljust(256, b"\0")
    ev = file.decode_file(_header(Op.FILE_RENAME) + body, BootClock())
    assert (ev.path, ev.path2, ev.ret, ev.dirfd) == ("/tmp/a", "/tmp/b", 0, -100)


@pytest.mark.parametrize(
    "raw,want",
    [
        (struct.pack("<H", socket.AF_INET) + struct.pack("!H", 8080) + socket.inet_aton("10.1.2.3"),
         ("ipv4", "10.1.2.3", 8080)),
        (struct.pack("<H", socket.AF_INET6) + struct.pack("!H", 443) + b"\0" * 4
         + socket.inet_pton(socket.AF_INET6, "::1"), ("ipv6", "::1", 443)),
        (struct.pack("<H", socket.AF_UNIX) + b"/run/x.sock\0", ("unix", "/run/x.sock", 0)),
        (struct.pack("<H", socket.AF_UNIX) + b"\0abstract\0", ("unix", "@abstract", 0)),
        (b"\x02", ("", "", 0)),
        (struct.pack("<H", socket.AF_INET) + b"\0", ("af2", "", 0)),
    ],
)
def test_parse_sockaddr(raw, want):
    assert net.parse_sockaddr(raw) == want


@pytest.mark.parametrize("raw,shown", [
    (b"plain/\xc3\xa9", "plain/\u00e9"),  # valid UTF-8 as is
    (b"bad\xff", "bad\\xff"),  # an undecodable byte: one backslash
    (b"lit\\xff", "lit\\\\xff"),  # the four characters \ x f f: the backslash doubled
    (b"\\\xfe\\\\", "\\\\\\xfe\\\\\\\\"),
    (b"dev-disk-by\\x2duuid.swap", "dev-disk-by\\\\x2duuid.swap"),  # systemd's escapes are real backslashes
])
def test_escape_is_unambiguous_and_reversible(raw, shown):
    assert escape(raw) == shown
    assert unescape(shown) == raw


def test_unix_socket_path_escaped_like_every_kernel_string():
    sa = struct.pack("<H", socket.AF_UNIX)
    assert net.parse_sockaddr(sa + b"/run/\xff\0")[1] == "/run/\\xff"
    assert net.parse_sockaddr(sa + b"/run/\\xff\0")[1] == "/run/\\\\xff"


def test_procfs_strings_escaped_like_kernel_strings(tmp_path):
    # The process table's names (read from /proc for processes older than the agent) print in the
    # same fields as the exec event's: the same escaping, and nothing orjson cannot write.
    import os

    import orjson

    from agent.enrich.proctable import ProcFS

    (tmp_path / "stat").write_bytes(b"btime 1700000000\n")
    p = tmp_path / "42"
    p.mkdir()
    (p / "stat").write_bytes(b"42 (a\xff\\x) S 1 " + b"0 " * 30 + b"\n")
    (p / "cmdline").write_bytes(b"/bin/a\xff\0lit\\xff\0")
    (p / "status").write_bytes(b"Uid:\t0\t0\t0\t0\n")
    os.symlink(b"/opt/a\xff\\xff", os.fsencode(str(p / "exe")))
    info = ProcFS(str(tmp_path)).process(42)
    assert (info.comm, info.exe, info.argv) == ("a\\xff\\\\x", "/opt/a\\xff\\\\xff", ("/bin/a\\xff", "lit\\\\xff"))
    assert unescape(info.exe) == b"/opt/a\xff\\xff"
    orjson.dumps({"process.executable.path": info.exe, "process.args": list(info.argv)})


def test_every_record_reads_its_own_event_name():
    """A record's members never shadow KernelEvent.name (a slots field named `name` would)."""
    from dataclasses import fields

    from agent.events import EVENT_NAMES, KernelEvent

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    for cls in subclasses(KernelEvent):
        assert "name" not in {f.name for f in fields(cls)}, f"{cls.__name__} has a member `name`"
    from agent.sensors.system import SYSTEM_OPS, SysEvent

    for op in SYSTEM_OPS:
        ev = SysEvent(op, 1, 2, 2, 1, 0, 0, 3, 4, "x", False, 0, "mount", 0, arg_text="/mnt")
        assert ev.name == EVENT_NAMES[op] and ev.name.startswith("system.")
