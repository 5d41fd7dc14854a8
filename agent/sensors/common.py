"""What every sensor shares: the record header (struct event_header) and the clock.

Struct layouts mirror probes/events.h; keep in sync with probes/events.h.
tests/unit/test_records.py compiles events.h with gcc and checks every size and offset here.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.events import KernelEvent, Op

# struct event_header
HEADER = struct.Struct("<BBHIIIIIQQII16s")
HEADER_FIELDS = ("op", "flags", "_pad0", "pid", "tid", "ppid", "uid", "gid", "ts_ns", "cgroup_id", "mntns",
                 "_pad1", "comm")
F_TRUNCATED = 0x01

PATH_MAX = 256  # NW_PATH_MAX
ARGS_MAX = 1024  # NW_ARGS_MAX
ADDR_MAX = 128  # NW_ADDR_MAX
PREFIX_MAX = 128  # NW_PREFIX_MAX

# enum nw_cfg
CFG_TARGET_TGID = 0
CFG_FILE_READONLY = 1


class DecodeError(ValueError):
    """A record too short or with an op no sensor knows."""


class BootClock:
    """Turns CLOCK_BOOTTIME nanoseconds (bpf_ktime_get_boot_ns) into wall-clock nanoseconds.

    BOOTTIME keeps counting through suspend, so one offset holds; `resync` follows wall-clock
    steps (NTP) and is called from the pipeline's periodic tick.
    """

    __slots__ = ("offset",)

    def __init__(self) -> None:
        self.offset = 0
        self.resync()

    def resync(self) -> None:
        self.offset = time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def text(buf: bytes, off: int, length: int) -> str:
    """A kernel-copied string: invalid UTF-8 is kept visible as escapes, never dropped."""
    return buf[off : off + length].decode("utf-8", "backslashreplace")


def header_args(buf: bytes, clock: BootClock) -> tuple:
    """The KernelEvent fields of a record, in dataclass order."""
    if len(buf) < HEADER.size:
        raise DecodeError(f"record of {len(buf)} bytes is shorter than its header")
    op, flags, _, pid, tid, ppid, uid, gid, ts, cgroup_id, mntns, _, comm = HEADER.unpack_from(buf)
    name = comm.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")
    return (Op(op), ts + clock.offset, pid, tid, ppid, uid, gid, cgroup_id, mntns, name, bool(flags & F_TRUNCATED))


Decoder = Callable[[bytes, BootClock], KernelEvent]


@dataclass(frozen=True)
class Sensor:
    """A probe family as data: its C file, drop-counter slot, decoders, and the syscalls it may lack."""

    name: str
    source: str  # file name under probes/
    probe: int  # enum nw_probe slot of its drop counter
    decoders: dict[int, Decoder]
    optional_tracepoints: tuple[tuple[str, str], ...] = field(default=())


def check_size(buf: bytes, need: int, what: str) -> None:
    if len(buf) < need:
        raise DecodeError(f"{what} record of {len(buf)} bytes, expected {need}")
