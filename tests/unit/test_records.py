"""The user-side record layouts match probes/events.h, and decoders read packed bytes right."""

import os
import socket
import struct
import subprocess

import pytest

from agent.events import Op
from agent.sensors import bench, cgroup, file, net, process
from agent.sensors.common import HEADER, BootClock, DecodeError

PROBES = os.path.join(os.path.dirname(__file__), "..", "..", "probes")

_C = r"""
#include <stdio.h>
#include <stddef.h>
typedef unsigned char __u8; typedef unsigned short __u16; typedef unsigned int __u32;
typedef int __s32; typedef unsigned long long __u64; typedef long long __s64;
#include "events.h"
#define S(t) printf(#t " %zu\n", sizeof(struct t))
#define O(t, f) printf(#t "." #f " %zu\n", offsetof(struct t, f))
int main(void) {
    S(event_header); S(exec_event); S(fork_event); S(exit_event); S(file_event); S(net_event);
    S(bench_event); S(path_key); S(cgroup_event);
    O(event_header, ts_ns); O(event_header, cgroup_id); O(event_header, mntns); O(event_header, comm);
    O(exec_event, filename); O(exec_event, args); O(file_event, path); O(file_event, path2);
    O(net_event, addr); O(fork_event, child_pid); O(exit_event, exit_code); O(exec_event, action);
    S(deny_key); S(ino_key);
    printf("OP_EXEC %d\nOP_FILE_OPEN %d\nOP_NET_LISTEN %d\nOP_BENCH %d\n", OP_EXEC, OP_FILE_OPEN, OP_NET_LISTEN,
           OP_BENCH);
    return 0;
}
"""


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory):
    d = tmp_path_factory.mktemp("layout")
    (d / "l.c").write_text(_C)
    subprocess.run(["gcc", "-I", PROBES, "-o", str(d / "l"), str(d / "l.c")], check=True)
    out = subprocess.run([str(d / "l")], check=True, capture_output=True, text=True).stdout
    return {k: int(v) for k, v in (line.split() for line in out.splitlines())}


def test_sizes_match_events_h(c_layout):
    assert c_layout["event_header"] == HEADER.size
    assert c_layout["exec_event"] == process.EXEC_SIZE
    assert c_layout["fork_event"] == process.FORK_SIZE
    assert c_layout["exit_event"] == process.EXIT_SIZE
    assert c_layout["file_event"] == file.FILE_SIZE
    assert c_layout["net_event"] == net.NET_SIZE
    assert c_layout["bench_event"] == bench.BENCH_SIZE
    assert c_layout["path_key"] == 4 + 128
    assert c_layout["cgroup_event"] == cgroup.CGROUP_SIZE


def test_offsets_match_events_h(c_layout):
    assert c_layout["event_header.ts_ns"] == 24
    assert c_layout["event_header.cgroup_id"] == 32
    assert c_layout["event_header.mntns"] == 40
    assert c_layout["event_header.comm"] == 48
    assert c_layout["exec_event.filename"] == HEADER.size + 8
    assert c_layout["exec_event.args"] == HEADER.size + 8 + 256
    assert c_layout["file_event.path"] == HEADER.size + 40
    assert c_layout["file_event.path2"] == HEADER.size + 40 + 256
    assert c_layout["net_event.addr"] == HEADER.size + 24
    assert c_layout["fork_event.child_pid"] == HEADER.size
    assert c_layout["exit_event.exit_code"] == HEADER.size
    assert c_layout["exec_event.action"] == HEADER.size + 8 + 256 + 1024
    assert c_layout["deny_key"] == 4 + 8 + 128  # no padding between prefixlen and the trie's data
    assert c_layout["ino_key"] == 16


def test_op_codes_match(c_layout):
    assert c_layout["OP_EXEC"] == Op.EXEC
    assert c_layout["OP_FILE_OPEN"] == Op.FILE_OPEN
    assert c_layout["OP_NET_LISTEN"] == Op.NET_LISTEN
    assert c_layout["OP_BENCH"] == Op.BENCH


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
